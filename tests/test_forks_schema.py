"""The forks' fields in the schema (converters/caffe/forks.py): prototxts read them as typed
messages with the forks' defaults and refuse misspellings; binary files keep BVLC's meaning of a
reused number and fork_fields decodes a layer's fork fields with its type's table."""

from __future__ import annotations

import pytest

from converters import format_message, parse_text
from converters.caffe.binary import decode_message, encode_message
from converters.caffe.forks import fork_fields
from converters.caffe.formats import read_net
from converters.caffe.message import Message
from tests.conftest import need_shared


def _layer(text: str) -> Message:
    return parse_text(text).getall("layer")[0]


def test_fork_parameters_read_from_a_prototxt_are_typed_with_the_forks_defaults() -> None:
    layer = _layer('layer { name: "i" type: "Interp" interp_param { zoom_factor: 2 } }')
    p = layer.get("interp_param")
    assert p.type == "InterpParameter" and p.get("zoom_factor") == 2 and p.get("shrink_factor") == 1
    det = _layer(
        'layer { name: "d" type: "DetectionOutput" detection_output_param { num_classes: 21 '
        "nms_param { nms_threshold: 0.45 top_k: 400 } code_type: CENTER_SIZE } }"
    ).get("detection_output_param")
    assert det.get("share_location") is True and det.get("keep_top_k") == -1
    assert str(det.get("code_type")) == "CENTER_SIZE" and det.get("nms_param").get("top_k") == 400
    assert _layer('layer { name: "p" type: "PriorBox" }').get("prior_box_param").get("clip") is False


def test_a_fork_enum_or_type_error_is_refused_at_its_line() -> None:
    with pytest.raises(ValueError, match="line 1.*not a value of"):
        parse_text('layer { name: "d" type: "DetectionOutput" detection_output_param { code_type: CENTRE } }')
    with pytest.raises(ValueError, match="takes an integer"):
        parse_text('layer { name: "i" type: "Interp" interp_param { zoom_factor: 1.5 } }')


def test_fork_fields_write_back_to_text_unchanged() -> None:
    text = 'layer { name: "u" type: "Upsample" upsample_param { scale: 2 pad_out_h: true } }'
    net = parse_text(text)
    assert parse_text(format_message(net)) == net


def test_the_layer_type_decides_a_reused_field_number() -> None:
    # ENet writes upsample_param as field 147, which BVLC reads as swish_param.
    upsample = Message("LayerParameter", name="up", type="Upsample")
    upsample.set(
        "swish_param", decode_message(encode_message(Message("UpsampleParameter", scale=3)), "SwishParameter")
    )
    decoded = fork_fields(upsample)
    assert decoded.get("upsample_param").get("scale") == 3 and "swish_param" not in decoded
    # gklz1982/caffe-yolov2 writes reorg_param as 147 too: integers where swish_param has a float
    reorg = Message("LayerParameter", name="r", type="Reorg")
    reorg.set(
        "swish_param",
        decode_message(encode_message(Message("ReorgParameter", stride=3, reverse=True)), "SwishParameter"),
    )
    decoded = fork_fields(reorg).get("reorg_param")
    assert decoded.get("stride") == 3 and decoded.get("reverse") is True
    swish = Message("LayerParameter", name="s", type="Swish", swish_param=Message("SwishParameter", beta=2.0))
    assert fork_fields(swish) == swish


def test_fork_fields_of_real_caffemodels_decode_with_their_forks_tables() -> None:
    folder = need_shared("real-caffe-models")
    enet = {
        str(l.get("name")): l
        for l in read_net(folder / "enet_cityscapes" / "cityscapes_weights.caffemodel").getall("layer")
    }
    bn = fork_fields(enet["bn0_1"]).get("bn_param")
    assert str(bn.get("bn_mode")) == "INFERENCE" and bn.get("shift_filler").get("value") == pytest.approx(
        0.001
    )
    assert fork_fields(enet["upsample4_0_4"]).get("upsample_param").get("scale") == 2
    ssd = read_net(folder / "yufacedetectnet_v2_ssd" / "yufacedetectnet-open-v2.caffemodel").getall("layer")
    norm = fork_fields(next(l for l in ssd if l.get("type") == "Normalize")).get("norm_param")
    assert norm.get("across_spatial") is False and norm.get("channel_shared") is False
    prior = fork_fields(next(l for l in ssd if l.get("type") == "PriorBox")).get("prior_box_param")
    assert list(prior.get("min_size")) == [10.0, 16.0, 24.0] and prior.get("step") == 8.0


def test_inspect_shows_a_caffemodels_fork_fields_by_the_layers_type() -> None:
    from converters.inspect import describe

    folder = need_shared("real-caffe-models", "enet_cityscapes")
    layers = {entry["name"]: entry for entry in describe(folder / "cityscapes_weights.caffemodel")["layers"]}
    assert layers["bn0_1"]["settings"]["bn_param"]["bn_mode"] == "INFERENCE"
    assert layers["upsample4_0_4"]["settings"] == {"upsample_param": {"scale": 2}}
    assert "unknown_fields" not in layers["bn0_1"]
