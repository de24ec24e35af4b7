"""What a person watching a run sees: a JSONL log and a PNG plot of loss and validation mean IU.

``log.jsonl`` gets one line per displayed iteration (``{"iter", "loss", "smoothed_loss", "lr",
"it_per_s", "time"}``; ``smoothed_loss`` is Caffe's ``average_loss`` window) and one per scoring
(``{"iter", "val": {"loss", head: {metric: value}}}``). ``plot.png`` (drawn with PIL) shows the
smoothed training loss and the validation mean IU over iterations; both files are rewritten
atomically, so a reader never sees half of one.
"""

from __future__ import annotations

import json
import math
import os
from collections import deque
from collections.abc import Sequence
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from converters.atomic import atomic_write

__all__ = ["RunLog", "draw_plot", "read_log"]


def _finite_json(value):
    """``value`` with every non-finite float replaced by ``None`` (JSON's ``null``)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite_json(v) for v in value]
    return value


def read_log(path: str | os.PathLike[str]) -> list[dict]:
    """The records of a ``log.jsonl`` (a torn last line, from a killed process, is skipped)."""
    records = []
    try:
        lines = Path(path).read_text().splitlines()
    except FileNotFoundError:
        return []
    for line in lines:
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


class RunLog:
    """The run's ``log.jsonl`` and ``plot.png`` in ``directory``."""

    def __init__(self, directory: str | os.PathLike[str], window: int = 20, title: str = "") -> None:
        self.directory = Path(directory)
        self.path = self.directory / "log.jsonl"
        self.plot_path = self.directory / "plot.png"
        self.window: deque[float] = deque(maxlen=max(1, window))
        self.title = title

    def truncate(self, iteration: int) -> None:
        """Keep only the records up to ``iteration`` (a resumed run redoes the later ones)."""
        kept = [r for r in read_log(self.path) if int(r.get("iter", 0)) <= iteration]
        self._rewrite(kept)
        for record in kept[-self.window.maxlen :]:
            if isinstance(record.get("loss"), (int, float)):
                self.window.append(float(record["loss"]))

    def _rewrite(self, records: Sequence[dict]) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        with atomic_write(self.path, "w") as f:
            f.write("".join(json.dumps(_finite_json(r), allow_nan=False) + "\n" for r in records))

    def add_loss(self, loss: float) -> float:
        """Add one iteration's loss to the smoothing window; returns the smoothed loss."""
        self.window.append(float(loss))
        return sum(self.window) / len(self.window)

    def write(self, record: dict) -> None:
        """Append one record (one line, flushed); a NaN or infinite value is written as ``null``
        (JSON has no NaN)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a") as f:
            f.write(json.dumps(_finite_json(record), allow_nan=False) + "\n")

    def plot(self, head: str = "semantic") -> None:
        """Redraw ``plot.png`` from the log."""
        records = read_log(self.path)
        losses = [
            (r["iter"], r.get("smoothed_loss", r["loss"]))
            for r in records
            if isinstance(r.get("smoothed_loss", r.get("loss")), (int, float))
            and math.isfinite(r.get("smoothed_loss", r.get("loss")))
        ]
        ious = [
            (r["iter"], r["val"][head]["mean_iu"])
            for r in records
            if "val" in r and head in r["val"] and r["val"][head].get("mean_iu") is not None
        ]
        image = draw_plot(losses, ious, title=self.title)
        with atomic_write(self.plot_path, "wb") as f:
            image.save(f, format="PNG")


def _ticks(low: float, high: float, count: int = 5) -> list[float]:
    if not math.isfinite(low) or not math.isfinite(high) or high <= low:
        return [low]
    raw = (high - low) / count
    step = 10 ** math.floor(math.log10(raw))
    for m in (1, 2, 5, 10):
        if raw <= m * step:
            step *= m
            break
    first = math.ceil(low / step) * step
    return [first + i * step for i in range(int((high - first) / step) + 1)]


def _label(value: float) -> str:
    if value == 0:
        return "0"
    if abs(value) >= 1e5 or abs(value) < 1e-2:
        return f"{value:.1e}"
    return f"{value:g}"


def _panel(
    draw: ImageDraw.ImageDraw,
    box: tuple[int, int, int, int],
    points: Sequence[tuple[float, float]],
    x_range: tuple[float, float],
    colour: tuple[int, int, int],
    name: str,
    font,
    y_range: tuple[float, float] | None = None,
    markers: bool = False,
) -> None:
    left, top, right, bottom = box
    draw.rectangle(box, outline=(160, 160, 160))
    draw.text((left + 6, top + 4), name, fill=colour, font=font)
    if not points:
        draw.text((left + 6, top + 20), "(nothing yet)", fill=(120, 120, 120), font=font)
        return
    ys = [y for _, y in points]
    low, high = y_range or (min(ys), max(ys))
    if high <= low:
        low, high = low - 1, high + 1
    x0, x1 = x_range
    x1 = x1 if x1 > x0 else x0 + 1

    def at(x: float, y: float) -> tuple[float, float]:
        return (
            left + (x - x0) / (x1 - x0) * (right - left),
            bottom - (y - low) / (high - low) * (bottom - top),
        )

    for tick in _ticks(low, high):
        _, y = at(x0, tick)
        draw.line([(left, y), (right, y)], fill=(230, 230, 230))
        draw.text((4, y - 6), _label(tick), fill=(80, 80, 80), font=font)
    xy = [at(x, y) for x, y in points]
    if len(xy) > 1:
        draw.line(xy, fill=colour, width=2)
    if markers or len(xy) == 1:
        for x, y in xy:
            draw.ellipse([x - 3, y - 3, x + 3, y + 3], fill=colour)


def draw_plot(
    losses: Sequence[tuple[float, float]],
    ious: Sequence[tuple[float, float]],
    title: str = "",
    size: tuple[int, int] = (800, 560),
) -> Image.Image:
    """Two panels over a shared iteration axis: training loss (top) and validation mean IU, percent
    (bottom)."""
    width, height = size
    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default()
    xs = [x for x, _ in losses] + [x for x, _ in ious]
    x_range = (0.0, float(max(xs)) if xs else 1.0)
    left, right = 70, width - 20
    middle = (height - 60) // 2
    draw.text((left, 6), title, fill=(0, 0, 0), font=font)
    _panel(draw, (left, 24, right, 24 + middle - 10), losses, x_range, (31, 119, 180), "training loss", font)
    iou_box = (left, 34 + middle, right, height - 30)
    _panel(draw, iou_box, ious, x_range, (214, 39, 40), "validation mean IU (%)", font, markers=True)
    for tick in _ticks(*x_range):
        x = left + (tick - x_range[0]) / ((x_range[1] - x_range[0]) or 1) * (right - left)
        draw.text((x - 10, height - 24), _label(tick), fill=(80, 80, 80), font=font)
    draw.text((right - 60, height - 12), "iteration", fill=(80, 80, 80), font=font)
    return image
