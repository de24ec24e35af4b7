"""eval.metrics against an independent, loop-based computation of the paper's definitions."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from eval.metrics import ConfusionMatrix, compare, confusion, format_table, scores


def reference_metrics(hist: np.ndarray, exclude=()) -> dict:
    """The CVPR 2015 definitions, written out with Python loops over classes (no numpy reductions)."""
    n = len(hist)
    rows = [sum(int(hist[i][j]) for j in range(n)) for i in range(n)]
    cols = [sum(int(hist[j][i]) for j in range(n)) for i in range(n)]
    total = sum(rows)
    accs, ius = [], []
    for i in range(n):
        if i in exclude:
            continue
        if rows[i] > 0:
            accs.append(hist[i][i] / rows[i])
        union = rows[i] + cols[i] - hist[i][i]
        if union > 0:  # a class in neither labels nor predictions is skipped
            ius.append(hist[i][i] / union)
    fw = 0.0
    weight = sum(rows[i] for i in range(n) if i not in exclude)
    for i in range(n):
        if rows[i] > 0 and i not in exclude:
            fw += rows[i] * hist[i][i] / (rows[i] + cols[i] - hist[i][i])
    return {
        "pixel_acc": 100 * sum(hist[i][i] for i in range(n)) / total,
        "mean_acc": 100 * sum(accs) / len(accs),
        "mean_iu": 100 * sum(ius) / len(ius),
        "fw_iu": 100 * fw / weight,
    }


def random_hist(rng: np.random.Generator, n: int) -> np.ndarray:
    hist = rng.integers(0, 1000, size=(n, n))
    hist[np.diag_indices(n)] += rng.integers(0, 20000, size=n)
    absent_label = rng.choice(n, size=max(1, n // 5), replace=False)
    hist[absent_label, :] = 0  # classes that never occur in the labels ...
    hist[absent_label[0], :] = 0
    hist[:, absent_label[0]] = 0  # ... one of them not predicted either (nan IU, skipped)
    return hist


@pytest.mark.parametrize("seed", range(6))
def test_scores_match_loop_reference_on_random_confusions(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(3, 40))
    hist = random_hist(rng, n)
    got = scores(hist)
    expected = reference_metrics(hist)
    for key, value in expected.items():
        assert getattr(got, key) == pytest.approx(value, abs=1e-9), key
    absent = int(np.flatnonzero((hist.sum(0) == 0) & (hist.sum(1) == 0))[0])
    assert math.isnan(got.per_class_iu[absent]) and math.isnan(got.per_class_acc[absent])


def test_exclude_leaves_classes_out_of_the_class_averages() -> None:
    rng = np.random.default_rng(11)
    hist = random_hist(rng, 12)
    hist[5, :] = 0
    hist[0, 5] = 700  # class 5 is never true but is predicted: IU 0 unless excluded
    plain, excluded = scores(hist), scores(hist, exclude=[5])
    assert plain.per_class_iu[5] == 0.0 and math.isnan(excluded.per_class_iu[5])
    assert excluded.mean_iu == pytest.approx(reference_metrics(hist, exclude={5})["mean_iu"], abs=1e-9)
    assert excluded.mean_iu > plain.mean_iu
    assert excluded.pixel_acc == plain.pixel_acc


def test_confusion_matches_pixel_loop_and_ignores_255() -> None:
    rng = np.random.default_rng(3)
    n = 7
    labels = rng.integers(0, n, size=(2, 37, 41)).astype(np.uint8)
    labels[rng.random(labels.shape) < 0.2] = 255
    predictions = rng.integers(0, n, size=labels.shape)
    expected = np.zeros((n, n), dtype=np.int64)
    for truth, guess in zip(labels.ravel().tolist(), predictions.ravel().tolist(), strict=True):
        if truth != 255:
            expected[truth][guess] += 1
    got = confusion(torch.from_numpy(labels), torch.from_numpy(predictions), n)
    assert got.dtype == torch.int64 and np.array_equal(got.numpy(), expected)

    running = ConfusionMatrix(n)
    for k in range(2):
        running.update(torch.from_numpy(labels[k]), torch.from_numpy(predictions[k]))
    assert np.array_equal(running.numpy(), expected)


def test_pixel_level_metrics_agree_with_set_based_iou() -> None:
    """IU computed as |pred ∩ truth| / |pred ∪ truth| over pixel masks, per class."""
    rng = np.random.default_rng(5)
    n = 5
    labels = rng.integers(0, n, size=(64, 64))
    predictions = np.where(rng.random(labels.shape) < 0.7, labels, rng.integers(0, n, size=labels.shape))
    labels[:4] = 255
    valid = labels != 255
    ious = []
    for c in range(n):
        truth, guess = (labels == c) & valid, (predictions == c) & valid
        ious.append((truth & guess).sum() / (truth | guess).sum())
    running = ConfusionMatrix(n)
    running.update(torch.from_numpy(labels), torch.from_numpy(predictions))
    got = scores(running.matrix)
    assert got.per_class_iu == pytest.approx([100 * v for v in ious])
    assert got.pixel_acc == pytest.approx(100 * (predictions[valid] == labels[valid]).mean())
    assert got.pixels == int(valid.sum())


def test_prediction_out_of_range_is_refused() -> None:
    with pytest.raises(ValueError):
        confusion(torch.tensor([0, 1]), torch.tensor([0, 9]), 3)
    with pytest.raises(ValueError):
        confusion(torch.tensor([0, 1]), torch.tensor([0]), 3)
    running = ConfusionMatrix(3)
    running.update(torch.tensor([0, 255]), torch.tensor([0, 7]))  # out of range but ignored: fine
    assert running.numpy()[0, 0] == 1
    running.update(torch.tensor([1]), torch.tensor([7]))
    with pytest.raises(ValueError, match="outside 0..2"):
        running.numpy()


def test_compare_and_table() -> None:
    hist = np.array([[90, 10], [5, 95]])
    measured = scores(hist)
    result = compare(measured, {"pixel_acc": 92.5, "mean_iu": 80.0}, tolerance=0.1)
    assert result["pixel_acc"]["ok"] is True and result["pixel_acc"]["difference"] == pytest.approx(0.0)
    assert result["mean_iu"]["ok"] is False
    assert result["mean_acc"]["published"] is None and result["mean_acc"]["ok"] is None
    text = format_table(measured, ["bg", "fg"], {"pixel_acc": 92.5})
    assert "92.5000" in text and "fg" in text
    assert scores(np.zeros((3, 3))).to_json()["pixel_acc"] is None
