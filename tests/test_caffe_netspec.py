"""NetSpec: keyword routing, schema checks, naming, in-place layers, crop offsets, net comparison."""

from __future__ import annotations

import pytest

from converters import Message, format_message, parse_text
from converters.caffe.netspec import NetSpec, NetSpecError, build_message, crop, net_difference
from converters.caffe.netspec import layers as L


def _small_net() -> NetSpec:
    n = NetSpec("small")
    n.data = L.Input(name="input", shape=dict(dim=[1, 3, 32, 32]))
    n.conv1 = L.Convolution(
        n.data,
        num_output=8,
        pad=[1, 2],
        kernel_size=3,
        weight_filler=dict(type="gaussian", std=0.01),
        param=[dict(lr_mult=1, decay_mult=1), dict(lr_mult=2, decay_mult=0)],
    )
    n.relu1 = L.ReLU(n.conv1, in_place=True)
    n.pool1 = L.Pooling(n.relu1, pool="AVE", kernel_size=2, stride=2)
    n.drop1 = L.Dropout(n.pool1, dropout_ratio=0.25, in_place=True, include=dict(phase="TRAIN"))
    deconv = dict(num_output=4, kernel_size=4, stride=2, bias_term=False)
    n.up = L.Deconvolution(n.drop1, convolution_param=deconv)
    return n


EXPECTED_SMALL = """
name: "small"
layer { name: "input" type: "Input" top: "data" input_param { shape { dim: 1 dim: 3 dim: 32 dim: 32 } } }
layer {
  name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
  param { lr_mult: 1 decay_mult: 1 } param { lr_mult: 2 decay_mult: 0 }
  convolution_param {
    num_output: 8 pad: 1 pad: 2 kernel_size: 3 weight_filler { type: "gaussian" std: 0.01 }
  }
}
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1"
        pooling_param { pool: AVE kernel_size: 2 stride: 2 } }
layer { name: "drop1" type: "Dropout" bottom: "pool1" top: "pool1" include { phase: TRAIN }
        dropout_param { dropout_ratio: 0.25 } }
layer { name: "up" type: "Deconvolution" bottom: "pool1" top: "up"
        convolution_param { num_output: 4 bias_term: false kernel_size: 4 stride: 2 } }
"""


def test_keywords_go_to_the_type_parameter_and_the_layer() -> None:
    net = _small_net().to_proto()
    assert net_difference(parse_text(EXPECTED_SMALL), net) is None
    assert net == parse_text(EXPECTED_SMALL)


def test_fields_are_written_in_field_number_order() -> None:
    text = format_message(_small_net().to_proto())
    conv = text[text.index('name: "conv1"') :]
    # LayerParameter: bottom(3) top(4) param(6) convolution_param(106); within: num_output(1) pad(3)
    # kernel_size(4) weight_filler(7), whatever the keyword order was.
    order = ["bottom:", "top:", "param {", "convolution_param {", "num_output:", "pad:", "kernel_size:"]
    order.append("weight_filler")
    positions = [conv.index(word) for word in order]
    assert positions == sorted(positions)


def test_multiple_tops_and_automatic_names() -> None:
    n = NetSpec()
    n.data, n.label = L.Python(module="m", layer="Layer", ntop=2, param_str="{}")
    hidden = L.Convolution(n.data, num_output=2, kernel_size=1)  # never assigned: named automatically
    n.out = L.Eltwise(hidden, L.Convolution(n.data, num_output=2, kernel_size=1), operation="MAX")
    n.loss = L.SoftmaxWithLoss(n.out, n.label, loss_weight=2)
    net = n.to_proto()
    layers = net.getall("layer")
    assert [layer.get("name") for layer in layers] == ["data", "Convolution1", "Convolution2", "out", "loss"]
    assert layers[0].getall("top") == ["data", "label"]
    assert layers[3].getall("bottom") == ["Convolution1", "Convolution2"]
    assert str(layers[3].get("eltwise_param").get("operation")) == "MAX"
    assert layers[4].getall("loss_weight") == [2.0]


def test_in_place_chain_keeps_the_blob_name() -> None:
    n = NetSpec()
    n.data = L.Input(shape=dict(dim=[1, 1, 4, 4]))
    n.a = L.ReLU(n.data, in_place=True)
    n.b = L.Dropout(n.a, in_place=True)
    n.c = L.Convolution(n.b, num_output=1, kernel_size=1)
    layers = n.to_proto().getall("layer")
    assert [(x.get("name"), x.getall("bottom"), x.getall("top")) for x in layers] == [
        ("data", [], ["data"]),
        ("a", ["data"], ["data"]),
        ("b", ["data"], ["data"]),
        ("c", ["data"], ["c"]),
    ]


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda d: L.Convolution(d, num_output=1, kernel_sise=3), "unknown parameter 'kernel_sise'"),
        (lambda d: L.Pooling(d, pool="MEDIAN"), "'MEDIAN' is not a value of PoolingParameter.PoolMethod"),
        (lambda d: L.Convolution(d, num_output=-1), "out of range for uint32"),
        (lambda d: L.Convolution(d, num_output="8"), "expected an integer"),
        (lambda d: L.Convolution(d, bias_term=1), "expected true or false"),
        (lambda d: L.Pooling(d, kernel_size=[2, 2]), "not repeated"),
        (lambda d: L.ReLU(d, param=dict(lr_mul=1)), "ParamSpec has no field 'lr_mul'"),
        (lambda d: L.ReLU(d, nonsense_param=dict()), "LayerParameter has no field 'nonsense_param'"),
        (lambda d: L.Convolution(d, convolution_param=dict(num_output=1), bias_filler=3), "expected a dict"),
        (lambda d: L.ReLU(d, top="x"), "'top' is set by the net spec"),
        (lambda d: L.ReLU(d, d, in_place=True), "in_place needs exactly one bottom"),
    ],
)
def test_schema_errors_are_clear_value_errors(make, message) -> None:
    n = NetSpec()
    n.data = L.Input(shape=dict(dim=[1, 1, 4, 4]))
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        make(n.data)


def test_graph_errors() -> None:
    n = NetSpec()
    n.data = L.Input(shape=dict(dim=[1, 1, 4, 4]))
    with pytest.raises(NetSpecError, match="assigned twice"):
        n.data = L.ReLU(n.data)
    with pytest.raises(NetSpecError, match="only tops"):
        n.x = 3
    with pytest.raises(NetSpecError, match="bottoms must be tops"):
        L.ReLU("data")
    n.a = L.ReLU(n.data, name="same")
    n.b = L.ReLU(n.data, name="same")
    with pytest.raises(NetSpecError, match="two layers are named 'same'"):
        n.to_proto()


def test_build_message_enum_by_number_and_nested() -> None:
    msg = build_message("LayerParameter", {"name": "x", "include": [dict(phase=1, stage=["a", "b"])]})
    rule = msg.getall("include")[0]
    assert str(rule.get("phase")) == "TEST" and rule.getall("stage") == ["a", "b"]
    with pytest.raises(NetSpecError, match="unknown message type"):
        build_message("NoSuchParameter", {})


def test_crop_offset_is_derived_when_building() -> None:
    # Worked out by hand, output -> input: deconv (k4 s2): pool = (up - 3/2) / 2;
    # pool (k2 s2): conv = 2 pool + 1/2; conv (k5 pad 3): data = conv + 2 - 3.
    # Composed: data = up - 3/2 + 1/2 - 1 = up - 2, so up[x + 2] lies over data[x]: offset 2.
    n = NetSpec()
    n.data = L.Input(shape=dict(dim=[1, 1, 20, 20]))
    n.conv = L.Convolution(n.data, num_output=2, kernel_size=5, pad=3)
    n.pool = L.Pooling(n.conv, pool="MAX", kernel_size=2, stride=2)
    n.up = L.Deconvolution(n.pool, convolution_param=dict(num_output=2, kernel_size=4, stride=2))
    n.score = crop(n.up, n.data)
    layer = n.to_proto().getall("layer")[-1]
    assert layer.get("crop_param") == Message("CropParameter", axis=2, offset=[2])
    with pytest.raises(NetSpecError, match="derived from the geometry|come from the geometry"):
        crop(n.up, n.data, offset=3)


def test_net_difference_names_layer_and_field() -> None:
    a = _small_net().to_proto()
    b = _small_net().to_proto()
    assert net_difference(a, b) is None
    b.getall("layer")[3].get("pooling_param").set("stride", 3)
    assert net_difference(a, b) == "layer 3 'pool1' (Pooling): pooling_param.stride: 3 instead of 2"
    b = _small_net().to_proto()
    b.getall("layer")[1].getall("param")[1].set("decay_mult", 1.0)
    assert net_difference(a, b) == "layer 1 'conv1' (Convolution): param[1].decay_mult: 1.0 instead of 0.0"
    b = _small_net().to_proto()
    b.set("layer", b.getall("layer")[:-1])
    assert net_difference(a, b) == "5 layers instead of 6; missing: 'up'"
    b = _small_net().to_proto()
    b.getall("layer")[2].remove("top")
    assert net_difference(a, b) == "layer 2 'relu1' (ReLU): top: missing (expected ['conv1'])"
    b = _small_net().to_proto()
    b.set("name", "other")
    assert net_difference(a, b) == "net name: ['other'] instead of ['small']"
