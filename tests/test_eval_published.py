"""Regression against the published metrics: the real weights on the real datasets.

Runs only where the data and the cached weights are present; otherwise each case is skipped with the
reason. Dataset roots come from environment variables:

- ``FCN_PORT_VOC2011``  PASCAL VOC 2011 (or a VOCdevkit holding VOC2011) for seg11valid
- ``FCN_PORT_NYUD``     the FCN authors' NYUDv2 folder
- ``FCN_PORT_CONTEXT``  PASCAL-Context annotations (trainval/*.mat); ``FCN_PORT_VOC2010`` the VOC 2010
  images (defaults to ``FCN_PORT_CONTEXT`` itself, if it holds VOC2010 too)
- ``FCN_PORT_SIFTFLOW`` the SIFT Flow folder

Weights come from the weights cache (``python -m weights fetch NAME``); tests never download.
Tolerances: 0.1 points of each published figure; 0.05 of the four-decimal re-evaluation of the
released PASCAL models.
"""

from __future__ import annotations

import os

import pytest
import torch

from eval.datasets import ContextSegmentation, NYUDSegmentation, SIFTFlowSegmentation, VOCSegmentation
from eval.models import input_modalities
from eval.runner import evaluate_model
from weights.models import load_model

pytestmark = [pytest.mark.published, pytest.mark.slow]

TOLERANCE = 0.1
REEVALUATION_TOLERANCE = 0.05


def _root(variable: str) -> str:
    value = os.environ.get(variable)
    if not value:
        pytest.skip(f"set {variable} to the dataset root to run this published-metrics test")
    if not os.path.isdir(value):
        pytest.skip(f"{variable}={value} is not a folder")
    return value


def _voc(split, modalities):
    return VOCSegmentation(_root("FCN_PORT_VOC2011"), split, modalities)


def _nyud(split, modalities):
    return NYUDSegmentation(_root("FCN_PORT_NYUD"), split, modalities)


def _context(split, modalities):
    annotations = _root("FCN_PORT_CONTEXT")
    images = os.environ.get("FCN_PORT_VOC2010") or annotations
    return ContextSegmentation(images, annotations, split, modalities)


def _siftflow(split, modalities):
    return SIFTFlowSegmentation(_root("FCN_PORT_SIFTFLOW"), split, modalities)


CASES = [
    ("voc-fcn32s", "voc", "seg11valid", _voc),
    ("voc-fcn16s", "voc", "seg11valid", _voc),
    ("voc-fcn8s", "voc", "seg11valid", _voc),
    ("voc-fcn8s-atonce", "voc", "seg11valid", _voc),
    ("voc-fcn-alexnet", "voc", "seg11valid", _voc),
    ("nyud-fcn32s-color", "nyud", "test", _nyud),
    ("nyud-fcn32s-hha", "nyud", "test", _nyud),
    ("nyud-fcn32s-color-hha", "nyud", "test", _nyud),
    ("pascalcontext-fcn32s", "pascalcontext", "val", _context),
    ("pascalcontext-fcn16s", "pascalcontext", "val", _context),
    ("pascalcontext-fcn8s", "pascalcontext", "val", _context),
    ("siftflow-fcn16s", "siftflow", "test", _siftflow),
]


@pytest.mark.parametrize(("model", "dataset_key", "split", "make"), CASES, ids=[c[0] for c in CASES])
def test_metrics_match_published(model: str, dataset_key: str, split: str, make) -> None:
    import weights
    dataset = make(split, ())  # skips without the dataset root
    try:
        cached = weights.cached_path(model)
    except weights.NotReleasedError as error:
        pytest.skip(str(error))
    if not cached.is_file():
        pytest.skip(f"weights of {model} are not cached at {cached} (python -m weights fetch {model})")

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    loaded = load_model([model], device)
    inputs = input_modalities(loaded, type(dataset).modalities)
    dataset = make(split, sorted(set(inputs.values())))
    result = evaluate_model(
        loaded, dataset, inputs=inputs, device=device, workers=min(4, os.cpu_count() or 1)
    )

    checked = 0
    for head in dataset.heads:
        key = dataset_key if head.name == "semantic" else f"{dataset_key}-{head.name}"
        measured = result.scores[head.name]
        rows = weights.published.lookup_all(model, key, split, "released")
        if not rows:  # only the paper's model was published for this net and dataset
            rows = weights.published.lookup_all(model, key, split, "paper")
        for row in rows:
            tolerance = REEVALUATION_TOLERANCE if row.source.work == weights.published.REEVAL else TOLERANCE
            for name, figure in row.metrics().items():
                value = getattr(measured, name)
                assert abs(value - figure) <= tolerance, (
                    f"{model} {dataset_key} {split} {head.name} {name}: measured {value:.4f}, "
                    f"published {figure} ({row.source}), tolerance {tolerance}"
                )
                checked += 1
    if checked == 0:
        pytest.skip(f"no published figures for {model} on {dataset_key} {split}")
