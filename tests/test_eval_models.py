"""The registry record says which dataset input feeds each net input (one record feeds the evaluator)."""

from __future__ import annotations

import pytest

import weights
from eval.models import LoadedModel, ModelError, input_modalities

NYUD_INPUTS = ("color", "hha", "depth", "color-depth")


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("nyud-fcn32s-color", {"data": "color"}),
        ("nyud-fcn32s-hha", {"data": "hha"}),
        ("nyud-fcn32s-color-d", {"data": "color-depth"}),
        ("nyud-fcn32s-color-hha", {"color": "color", "hha": "hha"}),
    ],
)
def test_registry_records_route_dataset_inputs(name: str, expected: dict[str, str]) -> None:
    record = weights.get(name)
    model = LoadedModel(lambda **_: {}, name, name, [spec.blob for spec in record.inputs], record)
    assert input_modalities(model, NYUD_INPUTS) == expected


def test_override_and_unknown_inputs() -> None:
    model = LoadedModel(lambda **_: {}, "x", None, ["data"], None)
    assert input_modalities(model, NYUD_INPUTS, {"data": "hha"}) == {"data": "hha"}
    with pytest.raises(ModelError, match="no such input"):
        input_modalities(model, NYUD_INPUTS, {"rgb": "color"})
