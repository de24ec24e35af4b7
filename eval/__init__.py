"""Evaluation of the FCN models: datasets, the paper's metrics, and ``python -m eval.<dataset>``."""

from .metrics import METRIC_NAMES, ConfusionMatrix, Scores, compare, confusion, scores

__all__ = ["METRIC_NAMES", "ConfusionMatrix", "Scores", "compare", "confusion", "scores"]
