"""Evaluation of the FCN models: datasets, the paper's metrics, and ``python -m eval.<dataset>``."""

import converters._startup  # noqa: F401 - first: a Ctrl-C while torch loads under `python -m` is quiet

from .metrics import METRIC_NAMES, ConfusionMatrix, Scores, compare, confusion, scores

__all__ = ["METRIC_NAMES", "ConfusionMatrix", "Scores", "compare", "confusion", "scores"]
