"""The FCN models: their net definitions (:mod:`.nets`, torch-free), their datasets' facts (means,
classes, palette: :mod:`.datasets`, torch-free), Caffe's preprocessing (:mod:`.preprocess`) and
readable named modules (:mod:`.models`; ``create("voc-fcn8s")``)."""

from __future__ import annotations

from typing import Any

_MODELS_NAMES = (
    "FCN", "FCN32s", "FCN16s", "FCN8s", "FCN8sAtOnce", "FCNAlexNet", "NYUDEarlyFusion",
    "NYUDLateFusion", "SIFTFlowFCN", "VGG_BLOCKS", "MODEL_CLASSES", "create",
)  # fmt: skip


def __getattr__(name: str) -> Any:
    """The named modules load torch on first use, so the torch-free parts stay light."""
    if name not in _MODELS_NAMES:
        raise AttributeError(f"module 'converters.fcn' has no attribute {name!r}")
    from . import models

    return getattr(models, name)


__all__ = list(_MODELS_NAMES)
