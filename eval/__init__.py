"""Evaluation of the FCN models: datasets, the paper's metrics, and ``python -m eval.<dataset>``.

The metric names below are imported on first use (they need torch), so that finding or listing the
evaluators (``fcn-port --help``) stays quick."""

import importlib
from typing import Any

import converters._startup  # noqa: F401 - first: a Ctrl-C while torch loads under `python -m` is quiet

__all__ = ["METRIC_NAMES", "ConfusionMatrix", "Scores", "compare", "confusion", "scores"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        return getattr(importlib.import_module(".metrics", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
