"""The confusion matrix (accumulated on the model's device) and the FCN paper's four metrics.

Definitions (CVPR 2015, Section 5, and the official ``score.py``): with ``n[i, j]`` the number of
pixels of true class ``i`` predicted as class ``j`` and ``t[i] = sum_j n[i, j]``:

- pixel accuracy     ``sum_i n[i, i] / sum_i t[i]``
- mean accuracy      nanmean over classes of ``n[i, i] / t[i]`` (a class absent from the labels is skipped)
- mean IU            nanmean over classes of ``n[i, i] / (t[i] + sum_j n[j, i] - n[i, i])`` (a class
  absent from both labels and predictions is skipped)
- frequency-weighted IU  ``sum_{i: t[i] > 0} (t[i] / sum_k t[k]) * IU[i]``

Labels outside ``0 .. num_classes - 1`` (255, "void") are ignored, as in ``score.py``.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

#: The metric keys, in the order the papers' tables give them.
METRIC_NAMES: tuple[str, ...] = ("pixel_acc", "mean_acc", "mean_iu", "fw_iu")
METRIC_TITLES: dict[str, str] = {
    "pixel_acc": "pixel acc.",
    "mean_acc": "mean acc.",
    "mean_iu": "mean IU",
    "fw_iu": "f.w. IU",
}


def confusion(labels: torch.Tensor, predictions: torch.Tensor, num_classes: int) -> torch.Tensor:
    """The ``num_classes x num_classes`` int64 confusion matrix of one batch, on the tensors' device.

    Row = true label, column = predicted label. Pixels whose label lies outside ``[0, num_classes)``
    are ignored; predictions must lie in ``[0, num_classes)``. Shapes of the two tensors must match.
    """
    if labels.shape != predictions.shape:
        raise ValueError(f"labels {tuple(labels.shape)} and predictions {tuple(predictions.shape)} differ")
    labels = labels.reshape(-1).long()
    predictions = predictions.reshape(-1).long()
    valid = (labels >= 0) & (labels < num_classes)
    index = labels[valid] * num_classes + predictions[valid]
    counts = torch.bincount(index, minlength=num_classes * num_classes)
    if counts.numel() != num_classes * num_classes:
        raise ValueError(f"a prediction lies outside 0..{num_classes - 1}")
    return counts.reshape(num_classes, num_classes)


class ConfusionMatrix:
    """A running confusion matrix kept on ``device``.

    :meth:`update` never synchronises with the device (no ``.item()``, no boolean indexing), so
    accumulation overlaps the next forward pass on a GPU. Ignored labels land in a spare slot; a
    prediction outside the classes lands in another and makes :meth:`numpy` raise.
    """

    def __init__(self, num_classes: int, device: torch.device | str | None = None) -> None:
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.num_classes = num_classes
        self._cells = num_classes * num_classes
        self._counts = torch.zeros(self._cells + 2, dtype=torch.int64, device=device)
        #: The ``num_classes x num_classes`` counts (a view that :meth:`update` keeps current).
        self.matrix = self._counts[: self._cells].view(num_classes, num_classes)

    def update(self, labels: torch.Tensor, predictions: torch.Tensor) -> None:
        """Add the pixels of one label map / prediction pair (any matching shapes)."""
        if labels.shape != predictions.shape:
            raise ValueError(
                f"labels {tuple(labels.shape)} and predictions {tuple(predictions.shape)} differ"
            )
        device = self._counts.device
        labels = labels.to(device, non_blocking=True).reshape(-1).long()
        predictions = predictions.to(device, non_blocking=True).reshape(-1).long()
        n = self.num_classes
        counted = (labels >= 0) & (labels < n)
        in_range = (predictions >= 0) & (predictions < n)
        cell = torch.where(in_range, labels * n + predictions, self._cells + 1)
        index = torch.where(counted, cell, self._cells)
        self._counts.index_add_(0, index, torch.ones_like(index))

    def numpy(self) -> np.ndarray:
        """The counts as an int64 numpy array (synchronises with the device).

        Raises ``ValueError`` if any labelled pixel had a prediction outside ``0 .. num_classes - 1``.
        """
        counts = self._counts.cpu().numpy()
        if counts[self._cells + 1]:
            raise ValueError(
                f"{int(counts[self._cells + 1])} labelled pixel(s) have a prediction outside "
                f"0..{self.num_classes - 1}"
            )
        return counts[: self._cells].reshape(self.num_classes, self.num_classes).copy()


@dataclass
class Scores:
    """The four metrics and the per-class figures, all in percent; ``nan`` marks a skipped class."""

    pixel_acc: float
    mean_acc: float
    mean_iu: float
    fw_iu: float
    per_class_acc: list[float] = field(default_factory=list)
    per_class_iu: list[float] = field(default_factory=list)
    pixels: int = 0

    def metrics(self) -> dict[str, float]:
        """The four headline metrics by key (see :data:`METRIC_NAMES`)."""
        return {name: getattr(self, name) for name in METRIC_NAMES}

    def to_json(self) -> dict:
        """A JSON-ready dict (``nan`` becomes ``None``)."""
        return _nan_to_none(asdict(self))


def _nan_to_none(value):
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _nan_to_none(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_nan_to_none(v) for v in value]
    return value


def _nanmean(values: np.ndarray) -> float:
    finite = values[~np.isnan(values)]
    return float(finite.mean()) if finite.size else math.nan


def scores(matrix: np.ndarray | torch.Tensor, exclude: Iterable[int] = ()) -> Scores:
    """The paper's metrics of a confusion matrix, as the official ``score.py`` computes them.

    ``exclude`` lists classes left out of the class averages (mean accuracy, mean IU, f.w. IU): the
    SIFT Flow classes absent from its test set. Pixel accuracy always counts every labelled pixel.
    An empty matrix gives ``nan`` everywhere.
    """
    if isinstance(matrix, torch.Tensor):
        matrix = matrix.cpu().numpy()
    hist = np.asarray(matrix, dtype=np.float64)
    if hist.ndim != 2 or hist.shape[0] != hist.shape[1]:
        raise ValueError(f"expected a square confusion matrix, got shape {hist.shape}")
    num_classes = hist.shape[0]
    diagonal = np.diag(hist)
    truth = hist.sum(axis=1)
    predicted = hist.sum(axis=0)
    total = truth.sum()
    with np.errstate(divide="ignore", invalid="ignore"):
        accuracy = diagonal / truth
        iu = diagonal / (truth + predicted - diagonal)
        pixel_acc = diagonal.sum() / total if total else math.nan
    excluded = [c for c in exclude if 0 <= c < num_classes]
    accuracy[excluded] = np.nan
    iu[excluded] = np.nan
    counted = truth > 0
    counted[excluded] = False
    counted_total = truth[counted].sum()
    fw_iu = (truth[counted] * iu[counted]).sum() / counted_total if counted_total else math.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return Scores(
            pixel_acc=100.0 * float(pixel_acc),
            mean_acc=100.0 * _nanmean(accuracy),
            mean_iu=100.0 * _nanmean(iu),
            fw_iu=100.0 * float(fw_iu),
            per_class_acc=[100.0 * float(a) for a in accuracy],
            per_class_iu=[100.0 * float(v) for v in iu],
            pixels=int(total),
        )


def compare(
    measured: Scores, published: dict[str, float | None], tolerance: float
) -> dict[str, dict[str, float | bool | None]]:
    """For each metric the measured value, the published one, the difference and whether it is within
    ``tolerance`` points (``None`` where no figure was published)."""
    result: dict[str, dict[str, float | bool | None]] = {}
    for name in METRIC_NAMES:
        value = getattr(measured, name)
        reference = published.get(name)
        if reference is None:
            result[name] = {"measured": value, "published": None, "difference": None, "ok": None}
            continue
        difference = value - reference
        ok = bool(abs(difference) <= tolerance + 1e-9) if not math.isnan(value) else False
        result[name] = {"measured": value, "published": reference, "difference": difference, "ok": ok}
    return result


def format_table(
    measured: Scores,
    class_names: Sequence[str],
    published: dict[str, float | None] | None = None,
    title: str = "",
) -> str:
    """A plain-text report: the four metrics beside the published figures, then per-class IU."""
    lines = [title] if title else []
    lines.append(f"{'metric':<12} {'measured':>9} {'published':>9} {'diff':>7}")
    for name in METRIC_NAMES:
        value = getattr(measured, name)
        reference = (published or {}).get(name)
        if reference is None:
            lines.append(f"{METRIC_TITLES[name]:<12} {value:9.4f} {'-':>9} {'-':>7}")
        else:
            lines.append(f"{METRIC_TITLES[name]:<12} {value:9.4f} {reference:9.4f} {value - reference:+7.2f}")
    lines.append(f"{'class':<20} {'IU':>8} {'acc.':>8}")
    for index, (iu, acc) in enumerate(zip(measured.per_class_iu, measured.per_class_acc, strict=True)):
        name = class_names[index] if index < len(class_names) else str(index)
        iu_text = "-" if math.isnan(iu) else f"{iu:.2f}"
        acc_text = "-" if math.isnan(acc) else f"{acc:.2f}"
        lines.append(f"{name:<20} {iu_text:>8} {acc_text:>8}")
    return "\n".join(lines)
