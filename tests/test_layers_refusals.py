"""What Caffe refuses in BVLC's newer layer types is refused here too, in one line naming the
layer and what to change (Caffe stops with a CHECK failure)."""

from __future__ import annotations

import pytest
import torch

from converters import build_graph, parse_text
from converters.errors import NetError


def _net(inputs: dict[str, tuple[int, ...]], layer: str) -> str:
    tops = " ".join(f'top: "{name}"' for name in inputs)
    shapes = " ".join("shape { " + " ".join(f"dim: {d}" for d in shape) + " }" for shape in inputs.values())
    return f'layer {{ name: "in" type: "Input" {tops} input_param {{ {shapes} }} }}\n{layer}'


CASES = {
    "an LSTM whose cont is not (T, N)": (
        {"x": (4, 2, 3), "cont": (4, 3)},
        'layer { name: "lstm" type: "LSTM" bottom: "x" bottom: "cont" top: "h" '
        "recurrent_param { num_output: 2 } }",
        r"layer 'lstm' \(LSTM\): cont 'cont' must be \(T, N\) = \[4, 2\], got \[4, 3\]",
    ),
    "an LSTM without num_output": (
        {"x": (4, 2, 3), "cont": (4, 2)},
        'layer { name: "lstm" type: "LSTM" bottom: "x" bottom: "cont" top: "h" }',
        r"layer 'lstm' \(LSTM\): recurrent_param needs num_output of at least 1",
    ),
    "an RNN exposing its hidden state without the state's bottom": (
        {"x": (4, 2, 3), "cont": (4, 2)},
        'layer { name: "rnn" type: "RNN" bottom: "x" bottom: "cont" top: "o" top: "h_T" '
        "recurrent_param { num_output: 2 expose_hidden: true } }",
        r"layer 'rnn' \(RNN\) takes bottoms x, cont, optionally a static input, then h_0 .* it has 2 bottoms",
    ),
    "an LSTMUnit whose gates are not 4H": (
        {"c": (1, 2, 3), "g": (1, 2, 10), "cont": (1, 2)},
        'layer { name: "unit" type: "LSTMUnit" bottom: "c" bottom: "g" bottom: "cont" top: "c1" top: "h1" }',
        r"layer 'unit' \(LSTMUnit\): the bottoms must be c_prev \(1, N, H\), gates \(1, N, 4H\)",
    ),
    "an SPP level whose padding reaches its kernel": (
        {"x": (1, 2, 5, 5)},
        'layer { name: "spp" type: "SPP" bottom: "x" top: "y" spp_param { pyramid_height: 3 } }',
        r"layer 'spp' \(SPP\): level 2 \(4x4 bins\) of a 5x5 input needs pad \[2, 2\] against kernel",
    ),
    "a Filter selector that is not (N, 1, ...)": (
        {"x": (3, 2), "sel": (3, 2)},
        'layer { name: "f" type: "Filter" bottom: "x" bottom: "sel" top: "y" }',
        r"layer 'f' \(Filter\): the selector 'sel' \[3, 2\] must be \(N, 1, \.\.\.\)",
    ),
    "a Filter with a top for the selector": (
        {"x": (3, 2), "sel": (3,)},
        'layer { name: "f" type: "Filter" bottom: "x" bottom: "sel" top: "y" top: "z" }',
        r"layer 'f' \(Filter\) makes one top per bottom but the last \(the selector\)",
    ),
    "an LSTM exposing its state whose h_0 is not (1, N, H) (found by the params fuzz target)": (
        {"x": (4, 2, 3), "cont": (4, 2), "h0": (1, 2, 1), "c0": (1, 2, 3)},
        'layer { name: "lstm" type: "LSTM" bottom: "x" bottom: "cont" bottom: "h0" bottom: "c0" top: "h" '
        'top: "hT" top: "cT" recurrent_param { num_output: 3 expose_hidden: true } }',
        r"layer 'lstm' \(LSTM\): h_0 'h0' must be \[1, 2, 3\], got \[1, 2, 1\]",
    ),
    "an RNN whose parameter sizes overflow (found by the params fuzz target)": (
        {"x": (4, 2, 3), "cont": (4, 2)},
        'layer { name: "rnn" type: "RNN" bottom: "x" bottom: "cont" top: "o" '
        "recurrent_param { num_output: 4294967295 } }",
        r"layer 'rnn' \(RNN\): .*overflow",
    ),
    "a C3D Deconvolution3D whose kernel overflows (found by the params fuzz target)": (
        {"x": (1, 2, 3, 4, 4)},
        'layer { name: "d" type: "Deconvolution3D" bottom: "x" top: "y" convolution3d_param { num_output: 3 '
        "kernel_size: 2147483647 kernel_depth: 2 } }",
        r"layer 'd' \(Deconvolution3D\): .*overflow",
    ),
    "a C3D Pooling3D whose stride would pad to a huge work blob (found by the params fuzz target)": (
        {"x": (1, 2, 3, 4, 4)},
        'layer { name: "p" type: "Pooling3D" bottom: "x" top: "y" pooling3d_param { pool: AVE '
        "kernel_size: 2 kernel_depth: 2 stride: 2147483647 temporal_stride: 1 } }",
        r"layer 'p' \(Pooling3D\): with stride \[1, 2147483647, 2147483647\] the padded work blob",
    ),
    "a SegNet Upsample whose scale makes a top past Caffe's blob limit (found by the params fuzz target)": (
        {"pool": (1, 3, 4, 5), "mask": (1, 3, 4, 5)},
        'layer { name: "up" type: "Upsample" bottom: "pool" bottom: "mask" top: "up" '
        "upsample_param { scale: 4294967295 } }",
        r"layer 'up' \(Upsample\): with scale \[4294967295, 4294967295\] the top of shape",
    ),
    "a Correlation stride past the fork's C int (found by the params fuzz target)": (
        {"a": (1, 2, 9, 9), "b": (1, 2, 9, 9)},
        'layer { name: "corr" type: "Correlation" bottom: "a" bottom: "b" top: "c" correlation_param { '
        "pad: 2 kernel_size: 3 max_displacement: 2 stride_1: 4294967295 stride_2: 1 } }",
        r"layer 'corr' \(Correlation\): stride_1 and stride_2 \[4294967295, 1\] exceeds Caffe's integer",
    ),
    "a Clip without max": (
        {"x": (2, 3)},
        'layer { name: "clip" type: "Clip" bottom: "x" top: "y" clip_param { min: 0 } }',
        r"layer 'clip' \(Clip\): clip_param needs min and max",
    ),
    "an HDF5Output of a 5-axis blob": (
        {"x": (1, 2, 3, 4, 5), "y": (1, 1)},
        'layer { name: "out" type: "HDF5Output" bottom: "x" bottom: "y" '
        'hdf5_output_param { file_name: "o.h5" } }',
        r"layer 'out' \(HDF5Output\): 'x' \[1, 2, 3, 4, 5\] has more axes than the 4 Caffe writes",
    ),
    "an HDF5Output without a file name": (
        {"x": (1, 2), "y": (1, 1)},
        'layer { name: "out" type: "HDF5Output" bottom: "x" bottom: "y" }',
        r"layer 'out' \(HDF5Output\): hdf5_output_param needs a file_name",
    ),
    "master's InfogainLoss given the deprecated normalize": (
        {"s": (2, 3), "l": (2,), "H": (3, 3)},
        'layer { name: "info" type: "InfogainLoss" bottom: "s" bottom: "l" bottom: "H" top: "loss" '
        "loss_param { normalize: true } }",
        r"layer 'info' \(InfogainLoss\): Caffe refuses loss_param.normalize here: use normalization",
    ),
    "an InfogainLoss whose H is not C x C": (
        {"s": (2, 3), "l": (2,), "H": (2, 2)},
        'layer { name: "info" type: "InfogainLoss" bottom: "s" bottom: "l" bottom: "H" top: "loss" }',
        r"layer 'info' \(InfogainLoss\): H 'H' \[2, 2\] must be 3 x 3",
    ),
    "an InfogainLoss without H": (
        {"s": (2, 3), "l": (2,)},
        'layer { name: "info" type: "InfogainLoss" bottom: "s" bottom: "l" top: "loss" }',
        r"layer .info. \(InfogainLoss\): give the infogain matrix H as a third bottom or as",
    ),
    "ROIPooling regions of four columns": (
        {"f": (1, 2, 6, 6), "rois": (3, 4)},
        'layer { name: "roi" type: "ROIPooling" bottom: "f" bottom: "rois" top: "y" '
        "roi_pooling_param { pooled_h: 2 pooled_w: 2 spatial_scale: 1 } }",
        r"layer 'roi' \(ROIPooling\): the regions 'rois' \[3, 4\] must be R x 5",
    ),
    "an Interp whose pads crop the whole input": (
        {"x": (1, 2, 6, 2), "ref": (1, 1, 11, 5)},
        'layer { name: "i" type: "Interp" bottom: "x" bottom: "ref" top: "y" '
        "interp_param { pad_beg: -1 pad_end: -1 } }",
        r"layer 'i' \(Interp\): pad_beg -1 and pad_end -1 crop the 6x2 input to 4x0: nothing is left",
    ),
    "DetectionOutput priors that are not 1 x 2 x 4P": (
        {"loc": (2, 8), "conf": (2, 4), "prior": (1, 1, 8)},
        'layer { name: "det" type: "DetectionOutput" bottom: "loc" bottom: "conf" bottom: "prior" top: "y" '
        "detection_output_param { num_classes: 2 } }",
        r"layer 'det' \(DetectionOutput\): the priors 'prior' \[1, 1, 8\] must be 1 x 2 x 4P",
    ),
    "DetectionOutput locations and confidences of other batches": (
        {"loc": (3, 8), "conf": (2, 4), "prior": (1, 2, 8)},
        'layer { name: "det" type: "DetectionOutput" bottom: "loc" bottom: "conf" bottom: "prior" top: "y" '
        "detection_output_param { num_classes: 2 } }",
        r"layer 'det' \(DetectionOutput\): the locations 'loc' \[3, 8\] and confidences 'conf' \[2, 4\]",
    ),
    "an Im2col whose kernel leaves no output (Caffe's top is empty; its forward stops)": (
        {"x": (1, 2, 1, 15)},
        'layer { name: "i" type: "Im2col" bottom: "x" top: "y" convolution_param { kernel_size: 2 } }',
        r"layer 'i' \(Im2col\): kernel extent 2, stride 1, pad 0 leave no output for an input of size 1",
    ),
    "C3D's MAX pooling with padding": (
        {"v": (1, 2, 4, 6, 6)},
        'layer { name: "p" type: "Pooling3D" bottom: "v" top: "y" '
        "pooling3d_param { pool: MAX kernel_size: 2 kernel_depth: 2 pad: 1 } }",
        r"layer 'p' \(Pooling3D\): C3D implements padding only for AVE pooling",
    ),
}


@pytest.mark.parametrize("what", list(CASES))
def test_what_caffe_refuses_in_the_newer_types_is_one_line_naming_the_layer(what: str) -> None:
    inputs, layer, message = CASES[what]
    with pytest.raises(NetError, match=message) as caught:
        build_graph(parse_text(_net(inputs, layer)), with_loss=True)
    assert "\n" not in str(caught.value)


def test_an_embed_or_batch_reindex_index_out_of_range_is_one_line_at_the_call() -> None:
    embed = build_graph(
        parse_text(
            _net(
                {"i": (3,)},
                'layer { name: "e" type: "Embed" bottom: "i" top: "y" '
                "embed_param { num_output: 2 input_dim: 4 } }",
            )
        ),  # fmt: skip
        strict=False,
    )
    assert embed(i=torch.tensor([0.0, 3.0, 1.0]))["y"].shape == (3, 2)
    with pytest.raises(ValueError, match=r"Embed: index 4 is outside \[0, 4\)"):
        embed(i=torch.tensor([0.0, 4.0, 1.0]))
    reindex = build_graph(
        parse_text(
            _net(
                {"x": (2, 3), "p": (3,)},
                'layer { name: "r" type: "BatchReindex" bottom: "x" bottom: "p" top: "y" }',
            )
        )
    )
    with pytest.raises(ValueError, match=r"BatchReindex: index -1 is outside the batch of 2"):
        reindex(x=torch.ones(2, 3), p=torch.tensor([0.0, -1.0, 1.0]))


VALUES = {
    "a NaN Power scale": (
        {"x": (1, 2, 3, 3)}, 'type: "Power" power_param { scale: nan }',
        "power_param.scale: nan", "is NaN",
    ),
    "an infinite ELU alpha": (
        {"x": (1, 2, 3, 3)}, 'type: "ELU" elu_param { alpha: inf }',
        "elu_param.alpha: inf", "is infinite",
    ),
    "a NaN lr_mult": (
        {"x": (1, 2, 3, 3)}, 'type: "PReLU" param { lr_mult: nan }',
        "param.lr_mult: nan", "is NaN",
    ),
    "a NaN BN eps": ({"x": (1, 2, 3, 3)}, 'type: "BN" bn_param { eps: nan }', "bn_param.eps: nan", "is NaN"),
    "a negative Normalize eps": (
        {"x": (1, 2, 3, 3)}, 'type: "Normalize" norm_param { eps: -1 }',
        "norm_param.eps: -1", "must be >= 0",
    ),
    "an infinite ReLU6 threshold": (
        {"x": (1, 2, 3, 3)}, 'type: "ReLU6" relu6_param { threshold: inf }',
        "threshold: inf", "is infinite",
    ),
    "a zero PriorBox img_size": (
        {"x": (1, 2, 3, 3), "im": (1, 3, 30, 30)},
        'type: "PriorBox" bottom: "im" prior_box_param { min_size: 4 img_size: 0 }',
        "prior_box_param.img_size: 0", "must be > 0",
    ),
    "a NaN PriorBox aspect ratio": (
        {"x": (1, 2, 3, 3), "im": (1, 3, 30, 30)},
        'type: "PriorBox" bottom: "im" prior_box_param { min_size: 4 aspect_ratio: nan }',
        "prior_box_param.aspect_ratio: nan", "is NaN",
    ),
    "an infinite PriorBox offset": (
        {"x": (1, 2, 3, 3), "im": (1, 3, 30, 30)},
        'type: "PriorBox" bottom: "im" prior_box_param { min_size: 4 offset: inf }',
        "prior_box_param.offset: inf", "is infinite",
    ),
    "a negative PriorBox variance": (
        {"x": (1, 2, 3, 3), "im": (1, 3, 30, 30)},
        'type: "PriorBox" bottom: "im" prior_box_param { min_size: 4 variance: -0.1 }',
        "prior_box_param.variance: -0.1", "must be >= 0",
    ),
    "a NaN dropout ratio": (
        {"x": (1, 2, 3, 3)}, 'type: "Dropout" dropout_param { dropout_ratio: nan }',
        "dropout_ratio: nan", "is NaN",
    ),
}  # fmt: skip


@pytest.mark.parametrize("what", list(VALUES))
def test_nan_infinite_and_out_of_range_parameter_values_are_refused_when_the_net_is_read(what: str) -> None:
    """Each parameter field's allowed values are declared once (converters.caffe.rules) and checked
    for every layer, BVLC's and the forks', before any converter runs."""
    inputs, body, field, problem = VALUES[what]
    layer = 'layer { name: "l" bottom: "x" top: "y" ' + body + " }"
    with pytest.raises(NetError, match=r"layer 'l' \(\w+\): field '") as caught:
        build_graph(parse_text(_net(inputs, layer)))
    message = str(caught.value)
    assert field in message and problem in message and "\n" not in message


def test_clip_bounds_may_be_infinite() -> None:
    net = build_graph(parse_text(_net({"x": (2,)}, 'layer { name: "c" type: "Clip" bottom: "x" top: "y" '
                                                    "clip_param { min: -inf max: 1 } }")))  # fmt: skip
    x = torch.tensor([-1e30, 5.0])
    assert torch.equal(net(x=x)["y"], torch.tensor([-1e30, 1.0]))


FIVE = (2, 2, 3, 4, 5)
#: Layers whose Caffe reads a bottom through Blob's legacy num/channels/height/width accessors: a
#: 5-axis bottom stops it ("Cannot use legacy accessors on Blobs with > 4 axes"; each checked in
#: the oracles of tools/README.md, BVLC's and the forks').
LEGACY_AXES = {
    "PReLU": ({"x": FIVE}, 'type: "PReLU" prelu_param { channel_shared: true }', "x"),
    "MVN": ({"x": FIVE}, 'type: "MVN"', "x"),
    "Normalize": ({"x": FIVE}, 'type: "Normalize"', "x"),
    "EuclideanLoss": ({"x": FIVE, "t": FIVE}, 'type: "EuclideanLoss" bottom: "t"', "x"),
    "ContrastiveLoss": ({"x": FIVE, "t": FIVE, "s": (2, 1, 1, 1, 1)},
                        'type: "ContrastiveLoss" bottom: "t" bottom: "s"', "x"),  # fmt: skip
    "HingeLoss": ({"x": FIVE, "label": (2,)}, 'type: "HingeLoss" bottom: "label"', "x"),
    "MultinomialLogisticLoss": ({"x": FIVE, "label": (2,)},
                                'type: "MultinomialLogisticLoss" bottom: "label"', "x"),  # fmt: skip
    "PriorBox": ({"x": FIVE, "im": (2, 3, 30, 30)},
                 'type: "PriorBox" bottom: "im" prior_box_param { min_size: 4 }', "x"),  # fmt: skip
    "Axpy": ({"a": (2, 2, 1, 1, 1), "x": FIVE, "z": FIVE}, 'type: "Axpy" bottom: "x" bottom: "z"', "x"),
    "ShuffleChannel": ({"x": FIVE}, 'type: "ShuffleChannel" shuffle_channel_param { group: 2 }', "x"),
    "BN": ({"x": FIVE}, 'type: "BN"', "x"),
}


@pytest.mark.parametrize("kind", list(LEGACY_AXES))
def test_a_five_axis_bottom_is_refused_where_caffe_reads_it_as_num_channels_height_width(kind: str) -> None:
    inputs, rest, blob = LEGACY_AXES[kind]
    first = next(iter(inputs))
    layer = f'layer {{ name: "l" bottom: "{first}" top: "y" {rest} }}'
    message = rf"layer 'l' \({kind}\): bottom '{blob}' has 5 axes \[2, 2, 3, 4, 5\]; .* at most 4 axes"
    with pytest.raises(NetError, match=message) as caught:
        build_graph(parse_text(_net(inputs, layer)), with_loss=True)
    assert "\n" not in str(caught.value)


def test_a_bottom_of_fewer_axes_reads_as_legacy_ones() -> None:
    """Fewer axes are Caffe's legacy 1s: a 2-axis PReLU bottom runs."""
    layer = 'layer { name: "l" type: "PReLU" bottom: "x" top: "y" }'
    net = build_graph(parse_text(_net({"x": (2, 3)}, layer)))
    with torch.no_grad():
        assert net(x=torch.ones(2, 3))["y"].shape == (2, 3)


def test_a_kernel_overhanging_the_input_by_a_stride_at_run_time_leaves_no_made_up_output() -> None:
    """Caffe's output length truncates toward zero: a kernel past the padded input by less than the
    stride gives one output (over zeros), by the stride or more none (an empty top, then a CHECK:
    probe conv_kernel_over_input_s1). At a run-time size the load never saw, the second is refused
    too, where we computed one output over padding we had made up."""
    import pytest
    import torch

    from converters import load_caffe, parse_text

    net = load_caffe(
        parse_text(
            'layer { name: "input" type: "Input" top: "data" '
            "input_param { shape { dim: 1 dim: 1 dim: 5 dim: 5 } } }\n"
            'layer { name: "c" type: "Convolution" bottom: "data" top: "c" '
            "convolution_param { num_output: 1 kernel_size: 4 stride: 2 } }"
        ),
        None,
        optimize=False,
    )
    with torch.no_grad():
        assert net(data=torch.ones(1, 1, 3, 3))["c"].shape[-2:] == (1, 1)  # (3 - 4) / 2 + 1 = 1
        with pytest.raises(RuntimeError):
            net(data=torch.ones(1, 1, 2, 2))  # (2 - 4) / 2 + 1 = 0
