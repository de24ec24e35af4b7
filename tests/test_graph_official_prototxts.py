"""The official train/val/test prototxts (Python data layers, losses) load directly."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from converters import build_graph, parse_text, read_prototxt
from converters.fcn.nets import MODELS, SPLITS, net_definition
from tests.conftest import need_shared

INFERENCE_SPLITS = [(m, s) for m in MODELS for s in SPLITS[m] if s in ("val", "test")]
EXPECTED_INPUTS = {"nyud-fcn32s-color-hha": ["color", "hha"], "nyud-fcn32s-color-d": ["color", "depth"]}
EXPECTED_OUTPUTS = {m: ["score_sem", "score_geo"] for m in MODELS if m.startswith("siftflow")}


@pytest.mark.parametrize(("model", "split"), INFERENCE_SPLITS)
def test_official_inference_prototxt_becomes_a_graph(model: str, split: str) -> None:
    net = read_prototxt(need_shared("fcn-reference", model, f"{split}.prototxt"))
    graph = build_graph(net, initialise=False)
    assert list(graph.caffe.inputs) == EXPECTED_INPUTS.get(model, ["data"])  # labels only feed losses
    assert graph.caffe.outputs == EXPECTED_OUTPUTS.get(model, ["score"])
    assert not any(kind.endswith("Loss") for _, kind in graph.caffe.layers)
    train = build_graph(net, initialise=False, phase="TRAIN", with_loss=True)
    assert any(kind == "SoftmaxWithLoss" for _, kind in train.caffe.layers)


def test_official_val_prototxt_runs_with_the_weights_of_our_definition(fcn_reference) -> None:
    """voc-fcn8s val.prototxt, fed the weights our generated definition holds, gives its outputs."""
    ours = build_graph(net_definition("voc-fcn8s", "deploy"), seed=5)
    state = ours.state_dict()
    weights = {
        layer: [state[key].numpy() for key in keys] for layer, keys in ours.caffe.parameter_blobs.items()
    }
    official = build_graph(read_prototxt(fcn_reference / "voc-fcn8s" / "val.prototxt"), weights)
    x = torch.randn(1, 3, 23, 31, generator=torch.Generator().manual_seed(0)) * 50
    with torch.no_grad():
        torch.testing.assert_close(official(data=x)["score"], ours(data=x)["score"], rtol=0, atol=0)


def test_undeclared_input_shapes_are_guessed_from_the_weights() -> None:
    """The color-d test net concatenates a 3-channel color and a 1-channel depth top before its
    first convolution: the weights give 4 channels, the image takes 3, the depth the rest."""
    definition = net_definition("nyud-fcn32s-color-d", "deploy", width=0.0625)
    ours = build_graph(definition, seed=2)
    state = ours.state_dict()
    weights = {
        layer: [state[key].numpy() for key in keys] for layer, keys in ours.caffe.parameter_blobs.items()
    }
    official = net_definition("nyud-fcn32s-color-d", "test", width=0.0625)  # equals the official file
    net = build_graph(official, weights)
    assert {b: s[1] for b, s in net.caffe.inputs.items()} == {"color": 3, "depth": 1}
    color, depth = torch.randn(1, 3, 20, 20) * 50, torch.rand(1, 1, 20, 20)
    with torch.no_grad():
        torch.testing.assert_close(
            net(color=color, depth=depth)["score"],
            ours(data=torch.cat([color, depth], 1))["score"],
            rtol=0,
            atol=0,
        )


def test_a_wrong_guess_is_never_a_refusal_and_the_shape_engine_says_how_to_give_the_shape() -> None:
    text = """
    layer { name: "data" type: "Python" top: "data" python_param { module: "m" layer: "L" } }
    layer { name: "fc" type: "InnerProduct" bottom: "data" top: "fc" inner_product_param { num_output: 2 } }
    """
    net = parse_text(text)
    weights = {"fc": [np.zeros((2, 4 * 5 * 5), np.float32), np.zeros(2, np.float32)]}
    with pytest.raises(ValueError, match=r"data=1x3x500x500.*input_shapes"):
        build_graph(net, weights, device="meta")  # shapes only: nothing to wait for
    lazy = build_graph(net, weights)  # sized by its first call
    assert lazy(data=torch.ones(1, 4, 5, 5))["fc"].shape == (1, 2)
    graph = build_graph(net, weights, input_shapes={"data": (1, 4, 5, 5)})
    assert graph(data=torch.ones(2, 4, 5, 5))["fc"].shape == (2, 2)
