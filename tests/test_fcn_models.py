"""The named FCN modules compute what the generic graph computes, for every official model."""

from __future__ import annotations

import pytest
import torch

from converters import build_graph
from converters.fcn import MODEL_CLASSES, FCN8sAtOnce, create
from converters.fcn.nets import MODELS


def test_every_official_model_has_a_named_class() -> None:
    assert set(MODELS) == set(MODEL_CLASSES)


@pytest.mark.parametrize("model", MODELS)
def test_named_module_gives_the_generic_graphs_outputs(model: str) -> None:
    named = create(model, width=0.0625)
    generic = build_graph(named.definition, seed=7)
    named.load_state_dict(generic.state_dict())  # the same parameter names
    generator = torch.Generator().manual_seed(1)
    inputs = {
        blob: torch.randn(2, shape[1], 29, 41, generator=generator) * 50
        for blob, shape in named.inputs.items()
    }
    with torch.no_grad():
        got, want = named(**inputs), generic(**inputs)
    assert got.keys() == want.keys()
    for blob in want:
        assert got[blob].shape[2:] == (29, 41)
        torch.testing.assert_close(got[blob], want[blob], rtol=0, atol=0)


def test_at_once_scales_its_skips_with_the_stored_values() -> None:
    model = create("voc-fcn8s-atonce", width=0.0625)
    assert isinstance(model, FCN8sAtOnce)
    x = torch.randn(1, 3, 24, 24, generator=torch.Generator().manual_seed(2)) * 50
    with torch.no_grad():
        model.scale_pool4.weight.fill_(0.01)
        before = model(data=x)["score"]
        model.scale_pool4.weight.fill_(0.5)
        after = model(data=x)["score"]
    assert not torch.equal(before, after)


def test_unknown_model_is_refused_with_the_choices() -> None:
    with pytest.raises(ValueError, match="voc-fcn8s"):
        create("voc-fcn4s")
