"""How the graph builder treats whole nets: inputs, phases, losses, errors, custom layers, files.

Numerical parity with Caffe is tested on Caffe-made fixtures elsewhere; these tests check the
builder's contract on small nets written here.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

import converters
from converters import (
    Converted,
    NetError,
    UnsupportedLayerError,
    WeightsMismatchError,
    build_graph,
    load_caffe,
    load_converted,
    parse_text,
    register_layer,
    save_converted,
)

SMALL_NET = """
name: "small"
layer { name: "input" type: "Input" top: "data" input_param { shape { dim: 1 dim: 3 dim: 12 dim: 12 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
        convolution_param { num_output: 4 kernel_size: 3 pad: 1 } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1"
        pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "score" type: "Convolution" bottom: "pool1" top: "score"
        convolution_param { num_output: 5 kernel_size: 1 } }
"""

TRAIN_VAL_NET = """
name: "trainval"
layer { name: "data" type: "Python" top: "data" top: "label"
        python_param { module: "voc_layers" layer: "VOCSegDataLayer" param_str: "{'split': 'val'}" } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
        convolution_param { num_output: 3 kernel_size: 3 pad: 1 } }
layer { name: "drop" type: "Dropout" bottom: "conv1" top: "conv1" include { phase: TRAIN } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "conv1" bottom: "label" top: "loss"
        loss_param { ignore_label: 255 normalize: false } }
layer { name: "acc" type: "Accuracy" bottom: "conv1" bottom: "label" top: "accuracy"
        accuracy_param { ignore_label: 255 }
        exclude { phase: TRAIN } }
"""


def _weights(net: converters.Message, seed: int = 0) -> dict[str, list[np.ndarray]]:
    module = build_graph(net, seed=seed)
    state = module.state_dict()
    return {
        layer: [state[key].numpy().copy() for key in keys]
        for layer, keys in module.caffe.parameter_blobs.items()
    }


def test_keyword_inputs_dict_outputs_and_readable_code() -> None:
    net = build_graph(parse_text(SMALL_NET))
    assert net.caffe.inputs == {"data": (1, 3, 12, 12)}
    assert net.caffe.outputs == ["score"]
    out = net(data=torch.randn(2, 3, 9, 7))
    assert set(out) == {"score"} and out["score"].shape == (2, 5, 5, 4)  # ceil rounding: 9 -> 5, 7 -> 4
    assert "self.conv1(data)" in net.code and "torch.relu" in net.code
    assert not net.training


def test_any_input_size_down_to_1x1() -> None:
    net = build_graph(parse_text(SMALL_NET))
    assert net(data=torch.randn(1, 3, 1, 1))["score"].shape == (1, 5, 1, 1)


def test_data_layer_tops_become_inputs_and_loss_layers_are_dropped_for_inference() -> None:
    net = build_graph(parse_text(TRAIN_VAL_NET))
    assert list(net.caffe.inputs) == ["data"]  # 'label' only feeds the loss and accuracy layers
    assert net.caffe.outputs == ["conv1"]
    assert [kind for _, kind in net.caffe.layers] == ["Python", "Convolution"]


def test_training_graph_keeps_losses_and_the_phase_rules() -> None:
    definition = parse_text(TRAIN_VAL_NET)
    weights = _weights(definition)
    train = load_caffe(
        definition, weights, phase="TRAIN", with_loss=True, input_shapes={"label": (2, 1, 6, 6)}
    )
    test = load_caffe(definition, weights, phase="TEST", with_loss=True, input_shapes={"label": (2, 1, 6, 6)})
    assert [k for _, k in train.caffe.layers] == ["Python", "Convolution", "Dropout", "SoftmaxWithLoss"]
    assert [k for _, k in test.caffe.layers] == ["Python", "Convolution", "SoftmaxWithLoss", "Accuracy"]
    x = torch.randn(2, 3, 6, 6, generator=torch.Generator().manual_seed(0))
    label = torch.randint(0, 3, (2, 1, 6, 6), generator=torch.Generator().manual_seed(1)).float()
    label[0, 0, :2] = 255
    out = test(data=x, label=label)
    assert set(out) == {"loss", "accuracy"} and out["loss"].shape == ()
    # normalize: false is Caffe's BATCH_SIZE normalization: the summed loss over valid pixels / N.
    scores = test.conv1(x).detach()
    log_p = torch.log_softmax(scores, dim=1)
    valid = label[:, 0] != 255
    picked = log_p.gather(1, label.clamp(max=2).long()).squeeze(1)
    torch.testing.assert_close(out["loss"].detach(), -(picked[valid]).sum() / 2)
    argmax_right = (scores.argmax(1) == label[:, 0].long())[valid].float().mean()
    torch.testing.assert_close(out["accuracy"], argmax_right)


def test_in_place_layers_overwrite_their_blob() -> None:
    net = build_graph(parse_text(SMALL_NET.replace('name: "pool1"', 'name: "pool1x"')))
    assert net.caffe.blob_shapes["conv1"] == (1, 4, 12, 12)
    assert "relu1 = torch.relu(conv1)" in net.code  # an in-place layer's result is named after the layer


def test_an_input_a_layer_computes_in_place_is_an_output_as_in_caffe() -> None:
    # BVLC Caffe (the oracle of tools/README.md) lists 'data' as the output of Input -> ReLU in place
    # on 'data'; without a layer writing it, an input is not one of our outputs.
    text = (
        'layer { name: "input" type: "Input" top: "data" input_param { shape { dim: 1 dim: 2 } } }\n'
        'layer { name: "relu" type: "ReLU" bottom: "data" top: "data" }\n'
    )
    net = build_graph(parse_text(text))
    out = net(data=torch.tensor([[-1.0, 2.0]]))
    assert list(out) == ["data"]
    torch.testing.assert_close(out["data"], torch.tensor([[0.0, 2.0]]))


def test_unsupported_layer_names_the_layer_and_type() -> None:
    text = SMALL_NET + 'layer { name: "odd" type: "Frobnicate" bottom: "score" top: "odd" }'
    with pytest.raises(UnsupportedLayerError, match="'odd'.*'Frobnicate'"):
        build_graph(parse_text(text))


def test_users_register_their_own_layer_types() -> None:
    @register_layer("TimesTwo")
    def times_two(ctx):  # noqa: ANN001, ANN202
        return Converted(function=torch.mul, kwargs={"other": 2.0})

    try:
        text = SMALL_NET + 'layer { name: "twice" type: "TimesTwo" bottom: "score" top: "twice" }'
        net = build_graph(parse_text(text))
        x = torch.randn(1, 3, 4, 4)
        torch.testing.assert_close(
            net(data=x)["twice"], 2 * build_graph(parse_text(SMALL_NET))(data=x)["score"]
        )
    finally:
        converters.unregister_layer("TimesTwo")


def test_weight_shape_mismatch_names_layer_blob_and_shapes() -> None:
    definition = parse_text(SMALL_NET)
    weights = _weights(definition)
    weights["score"][0] = np.zeros((5, 3, 1, 1), np.float32)
    with pytest.raises(
        WeightsMismatchError, match=r"'score' blob 0 \(weight\).*\[5, 3, 1, 1\].*\[5, 4, 1, 1\]"
    ):
        load_caffe(definition, weights)


def test_missing_weights_are_an_error_unless_not_strict() -> None:
    """A layer whose filler draws at random (a constant one is filled as Caffe fills it:
    tests/test_real_world_files.py)."""
    definition = parse_text(
        SMALL_NET.replace("num_output: 5 kernel_size: 1", 'num_output: 5 kernel_size: 1 weight_filler { type: "xavier" }')  # noqa: E501
    )
    weights = _weights(definition)
    del weights["score"]
    with pytest.raises(WeightsMismatchError, match="'score'"):
        load_caffe(definition, weights)
    net = load_caffe(definition, weights, strict=False)
    assert net.caffe.randomly_initialised == ["score"]


def test_extra_weights_from_a_training_net_are_reported() -> None:
    definition = parse_text(SMALL_NET)
    weights = _weights(definition)
    weights["fc_extra"] = [np.zeros((2, 2), np.float32)]
    assert load_caffe(definition, weights).caffe.unused_weights == ["fc_extra"]


def test_a_blob_nobody_produces_is_an_error_naming_it() -> None:
    text = SMALL_NET.replace('bottom: "pool1" top: "score"', 'bottom: "pool9" top: "score"')
    with pytest.raises(ValueError, match="'pool9'"):
        build_graph(parse_text(text))


def test_converted_files_round_trip(tmp_path) -> None:
    definition = parse_text(SMALL_NET)
    net = load_caffe(definition, _weights(definition, seed=3))
    x = torch.randn(1, 3, 10, 10)
    for name in ("net.safetensors", "net.pt"):
        save_converted(net, tmp_path / name)
        again = load_converted(tmp_path / name)
        torch.testing.assert_close(again(data=x)["score"], net(data=x)["score"], rtol=0, atol=0)


def test_caffe2torch_cli(tmp_path) -> None:
    definition = parse_text(SMALL_NET)
    converters.write_prototxt(definition, tmp_path / "deploy.prototxt")
    converters.write_weights(_weights(definition), tmp_path / "w.caffemodel")
    run = [sys.executable, "-m", "converters.caffe2torch"]
    ok = subprocess.run(
        [
            *run,
            str(tmp_path / "deploy.prototxt"),
            str(tmp_path / "w.caffemodel"),
            "-o",
            str(tmp_path / "o.pt"),
        ],
        capture_output=True,
        text=True,
    )
    assert ok.returncode == 0, ok.stderr
    assert "parameters: 137" in ok.stdout and "self-check: passed" in ok.stdout
    bad = subprocess.run(
        [
            *run,
            str(tmp_path / "deploy.prototxt"),
            str(tmp_path / "deploy.prototxt"),
            "-o",
            str(tmp_path / "x.pt"),
        ],
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2 and bad.stderr.startswith("error: ") and "Traceback" not in bad.stderr
    assert not (tmp_path / "x.pt").exists()
    assert not list(tmp_path.glob("*.part"))


def test_unknown_registry_name_is_a_one_line_error() -> None:
    bad = subprocess.run(
        [sys.executable, "-m", "converters.caffe2torch", "voc-fcn4s"], capture_output=True, text=True
    )
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "voc-fcn4s" in bad.stderr


def test_converted_file_of_a_net_with_undeclared_inputs_reloads(tmp_path) -> None:
    """A Python data layer declares no shape; the 4-channel input is learned from the weights and
    kept in the converted file, so the reload does not fall back to 3 channels."""
    text = TRAIN_VAL_NET.replace("num_output: 3 kernel_size: 3", "num_output: 2 kernel_size: 3")
    definition = parse_text(text)
    weights = {"conv1": [np.ones((2, 4, 3, 3), np.float32), np.zeros(2, np.float32)]}
    net = load_caffe(definition, weights)
    assert net.caffe.inputs["data"][1] == 4 and "data" not in net.caffe.declared_inputs
    save_converted(net, tmp_path / "n.safetensors")
    again = load_converted(tmp_path / "n.safetensors")
    x = torch.randn(1, 4, 5, 5)
    torch.testing.assert_close(again(data=x)["conv1"], net(data=x)["conv1"], rtol=0, atol=0)


def test_pt_file_is_a_plain_state_dict_for_graph_and_named_module(tmp_path) -> None:
    from converters.fcn import create

    named = create("voc-fcn32s", width=0.0625)
    generic = build_graph(named.definition, seed=4)
    save_converted(generic, tmp_path / "fcn32s.pt")
    state = torch.load(tmp_path / "fcn32s.pt", weights_only=True)
    assert all(isinstance(v, torch.Tensor) for v in state.values())
    named.load_state_dict(state)  # strict: the same keys as the generic graph
    x = torch.randn(1, 3, 17, 19)
    with torch.no_grad():
        torch.testing.assert_close(named(data=x)["score"], generic(data=x)["score"], rtol=0, atol=0)
    torch.save(named.state_dict(), tmp_path / "plain.pt")  # a state dict without the definition
    with pytest.raises(converters.CaffeFormatError, match="net definition"):
        load_converted(tmp_path / "plain.pt")


PROPAGATE_DOWN_NET = """
layer { name: "input" type: "Input" top: "data" input_param { shape { dim: 1 dim: 2 dim: 3 dim: 3 } } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
        convolution_param { num_output: 2 kernel_size: 1 } }
layer { name: "p" type: "Power" bottom: "conv" top: "p" propagate_down: false power_param { scale: 2 } }
layer { name: "q" type: "Power" bottom: "conv" top: "q" power_param { scale: 3 } }
"""


@pytest.mark.parametrize("force_backward, expected", [(False, 27.0), (True, 45.0)])
def test_propagate_down_false_stops_the_gradient_unless_the_net_forces_backward(
    force_backward: bool, expected: float
) -> None:
    # BVLC Caffe on this net (all-ones input and diffs, the oracle of tools/README.md): conv's weight
    # gradient is 27 per weight (q's 3 x 9 positions) without force_backward, 45 with it (p's 2 x 9
    # too: Net::Init's force_backward overrides propagate_down).
    text = ("force_backward: true\n" if force_backward else "") + PROPAGATE_DOWN_NET
    net = build_graph(parse_text(text), strict=False, optimize=False)
    out = net(data=torch.ones(1, 2, 3, 3))
    (out["p"].sum() + out["q"].sum()).backward()
    torch.testing.assert_close(net.conv.weight.grad, torch.full((2, 2, 1, 1), expected))


def test_propagate_down_given_for_some_bottoms_only_is_refused_as_caffe_refuses_it() -> None:
    text = PROPAGATE_DOWN_NET + (
        'layer { name: "cat" type: "Concat" bottom: "p" bottom: "q" top: "cat" propagate_down: false }'
    )
    with pytest.raises(NetError, match="'cat'.*propagate_down 1 times for 2 bottom"):
        build_graph(parse_text(text), strict=False)
