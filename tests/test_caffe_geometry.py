"""Coordinate mapping: layer maps, composition, crop derivation and its errors, receptive field, shapes.

Expected values are worked out by hand from the layer definitions (see the comments) or are
published facts (the FCN paper's Table 1; AlexNet's 55/27/13/6 feature maps for a 227 input).
"""

from __future__ import annotations

from fractions import Fraction

import pytest

from converters import parse_text, read_prototxt
from converters.caffe.geometry import (
    CoordMap,
    GeometryError,
    coord_map,
    crop_offsets,
    fill_crop_offsets,
    max_stride,
    receptive_field,
)
from converters.graph.shapes import blob_shapes, parameter_count


def _net(*layers: str) -> str:
    head = (
        'layer { name: "input" type: "Input" top: "data" '
        "input_param { shape { dim: 1 dim: 1 dim: 100 dim: 100 } } }"
    )
    return "\n".join((head, *layers))


def _conv(name: str, bottom: str, ks: int | str, stride: int | str = 1, pad: int | str = 0,
          kind: str = "Convolution") -> str:
    def fields(key: str, value: int | str) -> str:
        if isinstance(value, str):  # "3,5" -> two values
            return " ".join(f"{key}: {v}" for v in value.split(","))
        return f"{key}: {value}"

    return (
        f'layer {{ name: "{name}" type: "{kind}" bottom: "{bottom}" top: "{name}" convolution_param {{ '
        f"num_output: 2 {fields('kernel_size', ks)} {fields('stride', stride)} {fields('pad', pad)} }} }}"
    )


def _pool(name: str, bottom: str, ks: int, stride: int, pad: int = 0) -> str:
    return (
        f'layer {{ name: "{name}" type: "Pooling" bottom: "{bottom}" top: "{name}" '
        f"pooling_param {{ pool: MAX kernel_size: {ks} stride: {stride} pad: {pad} }} }}"
    )


def _crop(name: str, bottom: str, like: str, offset: int = 0) -> str:
    return (
        f'layer {{ name: "{name}" type: "Crop" bottom: "{bottom}" bottom: "{like}" top: "{name}" '
        f"crop_param {{ axis: 2 offset: {offset} }} }}"
    )


def _conv_pool_deconv(ks=3, stride=1, pad=0, pool=2, dstride=2, dpad=0) -> str:
    """conv -> max pool -> deconv with kernel 2 x stride, then a crop back to the data."""
    return _net(
        _conv("conv", "data", ks, stride, pad),
        _pool("pool", "conv", pool, pool),
        _conv("deconv", "pool", 2 * dstride, dstride, dpad, kind="Deconvolution"),
        _crop("crop", "deconv", "data"),
    )


def _offset(text: str) -> tuple[int, ...]:
    return crop_offsets(parse_text(text))["crop"]


def test_layer_maps_compose_and_invert() -> None:
    conv = CoordMap(1, (Fraction(2),), (Fraction(1),))  # bottom = 2 top + 1
    deconv = conv.inverse()
    assert deconv.then(conv) == CoordMap(1, (Fraction(1),), (Fraction(0),))
    assert conv(3) == (Fraction(7),) and deconv(7) == (Fraction(3),)
    # then() applies self first: outer(self(x)) = 3 (2x + 1) + 5
    assert conv.then(CoordMap(None, (Fraction(3),), (Fraction(5),)))(1) == (Fraction(14),)
    with pytest.raises(GeometryError, match="do not compose"):
        conv.then(CoordMap(2, (Fraction(1),), (Fraction(0),)))


def test_deconvolution_is_the_inverse_of_the_same_convolution() -> None:
    net = parse_text(
        _net(_conv("down", "data", 4, 2, 1), _conv("up", "down", 4, 2, 1, kind="Deconvolution"))
    )
    assert coord_map(net, "up", "data") == CoordMap(2, (Fraction(1),), (Fraction(0),))
    # conv alone: data = 2 down + (4 - 1) / 2 - 1 = 2 down + 1/2, so down = data / 2 - 1/4.
    assert coord_map(net, "down", "data") == CoordMap(2, (Fraction(1, 2),), (Fraction(-1, 4),))


def test_pool_and_deconv_of_equal_stride_give_identity_or_shift() -> None:
    # 2x pool, 2x deconv (kernel 4): data = 2 (up / 2 - 3/4) + 1/2 + 1 (conv k3) = up, offset 0.
    assert _offset(_conv_pool_deconv()) == (0,)
    # 4x pool (centre 3/2), 4x deconv (kernel 8, centre 7/2): data = up - 7/2 + 3/2 + 1 = up - 1.
    assert _offset(_conv_pool_deconv(pool=4, dstride=4)) == (1,)


@pytest.mark.parametrize("pad", [1, 4, 10])
def test_padding_moves_the_offset(pad: int) -> None:
    base = _offset(_conv_pool_deconv())[0]
    assert _offset(_conv_pool_deconv(pad=pad)) == (base + pad,)  # conv padding: a larger output
    if pad <= base:
        assert _offset(_conv_pool_deconv(dpad=pad)) == (base - pad,)
    assert _offset(_conv_pool_deconv(pad=pad, dpad=pad)) == (base,)  # they cancel


def test_anisotropic_parameters_map_each_axis_as_its_isotropic_net() -> None:
    def deconv_to_data(**conv) -> CoordMap:
        return coord_map(parse_text(_conv_pool_deconv(**conv)), "deconv", "data")

    h = deconv_to_data(ks=3, stride=1, pad=4)
    w = deconv_to_data(ks=5, stride=2, pad=10)
    both = deconv_to_data(ks="3,5", stride="1,2", pad="4,10")
    assert both.scale == h.scale + w.scale and both.shift == h.shift + w.shift
    assert w.scale == (Fraction(1, 2),)  # the stride-2 axis: deconv = data / 2 + shift
    # with equal strides the crop has one offset per axis: (k3 p4) -> 4 and (k5 p10) -> 10 - 1
    assert _offset(_conv_pool_deconv(ks="3,5", stride=1, pad="4,10")) == (4, 9)


def test_scale_mismatch_is_an_error() -> None:
    with pytest.raises(GeometryError, match="different scales"):
        _offset(_conv_pool_deconv(pool=3, dstride=2))


def test_non_integral_offset_is_an_error() -> None:
    # A 2x2 stride-1 conv puts its outputs between input pixels: shift 1/2.
    net = _net(_conv("conv", "data", 2, 1, 0), _crop("crop", "data", "conv"))
    with pytest.raises(GeometryError, match="offset 1/2 is not integral"):
        _offset(net)


def test_negative_offset_is_an_error() -> None:
    with pytest.raises(GeometryError, match="negative offset"):
        _offset(_conv_pool_deconv(dpad=10))


def test_unconnected_blobs_are_an_error() -> None:
    net = _net(
        _conv("conv", "data", 3),
        'layer { name: "ip" type: "InnerProduct" bottom: "conv" top: "ip" '
        "inner_product_param { num_output: 2 } }",
        _crop("crop", "ip", "data"),
    )
    with pytest.raises(GeometryError, match="crop layer 'crop': blobs 'ip' and 'data' are not connected"):
        _offset(net)


def test_crop_of_crop_uses_derived_offsets_not_written_ones() -> None:
    # The first crop's written offset (7) is wrong; the derived one (1) is used downstream.
    text = _net(
        _conv("conv", "data", 3, 1, 3),  # data = conv - 2, conv is data padded by 2 each side
        _crop("c1", "conv", "data", offset=7),
        _conv("big", "c1", 1, 1, 1),  # 1x1 conv with pad 1: c1 = big - 1
        _crop("c2", "big", "data", offset=7),
    )
    # c1: conv = data + 2 -> offset 2; big = c1 + 1 = data + 1 -> c2 offset 1.
    assert crop_offsets(parse_text(text)) == {"c1": (2,), "c2": (1,)}
    net = parse_text(text)
    fill_crop_offsets(net)
    assert [layer.get("crop_param").getall("offset") for layer in net.getall("layer")[2::2]] == [[2], [1]]
    # Filling only c2 maps through c1's written offset (what the net does): 7 is 5 too many.
    net = parse_text(text)
    with pytest.raises(GeometryError, match="crop layer 'c2': negative offset -4"):
        fill_crop_offsets(net, ["c2"])


def test_in_place_layers_are_versions_of_a_blob() -> None:
    # The crop refers to "x" after the in-place conv-free ReLU; mapping must go through it.
    text = _net(
        _conv("x", "data", 3, 1, 2),
        'layer { name: "relu" type: "ReLU" bottom: "x" top: "x" }',
        _crop("crop", "x", "data"),
    )
    assert _offset(text) == (1,)


def test_legacy_v1_net_is_upgraded() -> None:
    text = """
    input: "data" input_dim: 1 input_dim: 3 input_dim: 20 input_dim: 20
    layers { name: "conv" type: CONVOLUTION bottom: "data" top: "conv"
             convolution_param { num_output: 2 kernel_size: 3 pad: 4 } }
    layers { name: "relu" type: RELU bottom: "conv" top: "conv" }
    """
    net = parse_text(text)
    # data = conv + 1 - 4, so conv = data + 3
    assert coord_map(net, "conv", "data") == CoordMap(2, (Fraction(1),), (Fraction(3),))
    assert receptive_field(net, "conv") == 3
    assert blob_shapes(net)["conv"] == (1, 2, 26, 26)


def test_receptive_field_and_stride_composition() -> None:
    # conv3 (rf 3) -> pool2 s2 (rf 4, stride 2) -> conv3 (rf 4 + 2 * 2 = 8) -> pool2 (10, stride 4)
    net = parse_text(
        _net(
            _conv("c1", "data", 3, 1, 1),
            _pool("p1", "c1", 2, 2),
            _conv("c2", "p1", 3, 1, 1),
            _pool("p2", "c2", 2, 2),
            _conv("up", "p2", 4, 2, 1, kind="Deconvolution"),
        )
    )
    assert [receptive_field(net, b) for b in ("c1", "p1", "c2", "p2")] == [3, 4, 8, 10]
    assert [max_stride(net, b) for b in ("c1", "p1", "c2", "p2", "up")] == [1, 2, 2, 4, 4]
    with pytest.raises(GeometryError, match="Deconvolution"):
        receptive_field(net, "up")


def test_dilation_widens_the_kernel() -> None:
    net = parse_text(
        _net(
            'layer { name: "c" type: "Convolution" bottom: "data" top: "c" '
            "convolution_param { num_output: 1 kernel_size: 3 dilation: 2 pad: 2 } }"
        )
    )
    assert receptive_field(net, "c") == 5
    assert coord_map(net, "c", "data").shift == (Fraction(0),)


def test_table1_receptive_field_and_stride_of_official_nets(fcn_reference) -> None:
    vgg = read_prototxt(fcn_reference / "voc-fcn32s" / "val.prototxt")
    alex = read_prototxt(fcn_reference / "voc-fcn-alexnet" / "val.prototxt")
    assert (receptive_field(vgg, "fc7"), max_stride(vgg, "fc7")) == (404, 32)
    assert (receptive_field(alex, "fc7"), max_stride(alex, "fc7")) == (355, 32)


def test_official_offsets_derived_with_written_ones_removed(fcn_reference) -> None:
    expected = {
        "voc-fcn32s/train": {"score": (19,)},
        "voc-fcn16s/val": {"score_pool4c": (5,), "score": (27,)},
        "voc-fcn8s/deploy": {"score_pool4c": (5,), "score_pool3c": (9,), "score": (31,)},
        "voc-fcn8s-atonce/val": {"score_pool4c": (5,), "score_pool3c": (9,), "score": (31,)},
        "voc-fcn-alexnet/val": {"score": (18,)},
        "nyud-fcn32s-color-hha/test": {"score": (19,)},
        "nyud-fcn32s-color-d/test": {"score": (19,)},
    }
    for path, offsets in expected.items():
        net = read_prototxt(fcn_reference / f"{path}.prototxt")
        for layer in net.getall("layer"):
            if layer.get("type") == "Crop":
                layer.get("crop_param").set("offset", [0])
        assert crop_offsets(net) == offsets, path
        fill_crop_offsets(net)
        assert net == read_prototxt(fcn_reference / f"{path}.prototxt"), path


def test_shapes_follow_caffe_rounding() -> None:
    # Caffe pooling rounds up: 100 -> pool k3 s2 -> ceil(97 / 2) + 1 = 50; conv rounds down.
    net = parse_text(
        _net(
            _pool("p", "data", 3, 2),
            _conv("c", "p", 4, 3, 0),
            _conv("d", "c", 4, 2, 1, kind="Deconvolution"),
        )
    )
    shapes = blob_shapes(net)
    assert shapes["p"] == (1, 1, 50, 50)
    assert shapes["c"] == (1, 2, 16, 16)  # floor((50 - 4) / 3) + 1
    assert shapes["d"] == (1, 2, 32, 32)  # 2 * 15 + 4 - 2
    # weights: c 2x1x4x4 + 2, d 2x2x4x4 + 2
    assert parameter_count(net) == 34 + 66


def test_shape_errors() -> None:
    net = parse_text(_net(_conv("c", "data", 3, 1, 0), _crop("crop", "data", "c", offset=3)))
    with pytest.raises(GeometryError, match="offset 3 \\+ size 98 exceeds 100"):
        blob_shapes(net)
    python = parse_text('layer { name: "d" type: "Python" top: "data" }')
    with pytest.raises(GeometryError, match="give the shapes of data"):
        blob_shapes(python)
    assert blob_shapes(python, {"data": (1, 3, 5, 5)}) == {"data": (1, 3, 5, 5)}


def test_layers_without_a_fixed_window_are_errors() -> None:
    head = 'layer { name: "i" type: "Input" top: "data" } '
    no_kernel = parse_text(head + 'layer { name: "p" type: "Pooling" bottom: "data" top: "p" }')
    with pytest.raises(GeometryError, match="pooling layer 'p' has no kernel size"):
        receptive_field(no_kernel, "p")
    global_pool = parse_text(
        head + 'layer { name: "p" type: "Pooling" bottom: "data" top: "p" '
        "pooling_param { global_pooling: true } }"
    )
    with pytest.raises(GeometryError, match="global pooling 'p' sees the whole input"):
        receptive_field(global_pool, "p")
    with pytest.raises(GeometryError, match="the net has no blob 'q'"):
        max_stride(global_pool, "q")
