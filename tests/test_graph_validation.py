"""The graph builder refuses what Caffe refuses, at build time, in one line naming the layer, before
anything is allocated; and it runs the standard forms Caffe runs (several bottoms, a second top,
shared parameters, repeated names).

The refusal nets are ``PROBES`` of ``tools/make_layer_fixtures.py``: ``--probe`` builds each in real
Caffe, and tools/README.md records what Caffe did with it. Numbers for the forms Caffe runs come
from the Caffe-made fixtures in tests/fixtures/layers (test_layers_parity.py); the tests here check
the builder's contract around them.
"""

from __future__ import annotations

import importlib.util
import pathlib
import re
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch import fx

from converters import NetError, UnsupportedLayerError, WeightsMismatchError, build_graph, parse_text
from converters.graph import builder
from converters.layers import Converted, register_layer, unregister_layer
from tests.conftest import REPO

_spec = importlib.util.spec_from_file_location(
    "make_layer_fixtures", REPO / "tools" / "make_layer_fixtures.py"
)
assert _spec is not None and _spec.loader is not None
_tool = importlib.util.module_from_spec(_spec)
sys.modules.setdefault("make_layer_fixtures", _tool)
_spec.loader.exec_module(_tool)
PROBES: dict[str, str] = _tool.PROBES

# What the builder says about each probe: a pattern of its one-line NetError, or RUNS.
RUNS = "runs"
VERDICTS = {
    "conv_group_0": r"layer 'c' \(Convolution\).*group must be at least 1",  # Caffe: SIGFPE
    "log_base_1": r"layer 'l' \(Log\).*base 1",
    "log_base_0": r"layer 'l' \(Log\).*strictly positive",
    "exp_base_neg2": r"layer 'e' \(Exp\).*strictly positive",
    "conv_no_bottom": r"layer 'c' \(Convolution\) takes at least 1 bottom, got 0",
    "relu_two_tops": r"layer 'r' \(ReLU\) takes exactly 1 top, got 2",
    "eltwise_one_bottom": r"layer 'e' \(Eltwise\) takes at least 2 bottoms, got 1",
    "ip_no_top": r"layer 'ip' \(InnerProduct\) takes exactly 1 top, got 0",
    "slice_one_top": RUNS,
    "input_negative_dim": r"layer 'input' \(Input\).*negative dimension",
    "input_zero_dim_conv": r"layer 'input' \(Input\).*zero dimension",
    "input_zero_batch_conv": r"layer 'input' \(Input\).*zero dimension",
    "input_zero_batch_relu": r"layer 'input' \(Input\).*zero dimension",
    "conv_huge_kernel": r"layer 'c' \(Convolution\).*more than Caffe's limit",
    "conv_huge_stride": RUNS,
    # Caffe: one output (C++ truncates (2 - 3) / 2 to 0), which the fixture conv_kernel_over_input holds
    "conv_kernel_over_input_s2": RUNS,
    # Caffe: an empty top, then a CHECK at its first use
    "conv_kernel_over_input_s1": r"layer 'c' \(Convolution\).*leave no output for an input of size 2",
    "conv_huge_pad": r"layer 'c' \(Convolution\).*top 'c'.*more than Caffe's limit",
    "input_with_bottom": r"layer 'in2' \(Input\) takes exactly 0 bottoms, got 1",
    "ip_over_int_max": r"layer 'ip' \(InnerProduct\).*\[1073741824, 16\].*more than Caffe's limit",
    # The oracle (a fork) dropped these two shape checks; BVLC Caffe's Reshape has them.
    "eltwise_shapes_differ": r"layer 'e' \(Eltwise\).*same shape",
    "scale_two_bottoms_differ": r"layer 's' \(Scale\).*does not match",
    "bias_two_bottoms_differ": r"layer 'b' \(Bias\).*does not match",
    "lrn_two_bottoms": r"layer 'n' \(LRN\) takes exactly 1 bottom, got 2",
    "mvn_two_bottoms": r"layer 'n' \(MVN\) takes exactly 1 bottom, got 2",
    "power_two_bottoms": r"layer 'p' \(Power\) takes exactly 1 bottom, got 2",
    "softmax_axis_4": r"layer 's' \(Softmax\).*axis 4 is out of range",
    # BVLC: stride_h defaults to 0 and is refused (the oracle's fork defaults it to 1).
    "conv_stride_w_only": r"layer 'c' \(Convolution\).*stride_h and stride_w",
    "pool_stride_w_only": r"layer 'p' \(Pooling\).*stride_h and stride_w",
    "pool_huge_pad": r"layer 'p' \(Pooling\).*pad \[5, 5\] must be smaller than the kernel",
    "pool_3d_input": r"layer 'p' \(Pooling\).*4 axes",
    "pool_ave_two_tops": r"layer 'p' \(Pooling\).*only MAX pooling has a second top",
    "reduction_axis_4": r"layer 'r' \(Reduction\).*axis 4 is out of range",
    "reduction_empty_axis": r"layer 'input' \(Input\).*zero dimension",
    "scale_axis_int_max": r"layer 's' \(Scale\).*axis 2147483647 is out of range",
    "conv_two_bottoms_one_top": r"layer 'c' \(Convolution\) makes one top per bottom",
    "conv_two_bottoms_differ": r"layer 'c' \(Convolution\).*same shape",
    "top_from_two_layers": r"layer 'r2' \(Sigmoid\) writes blob 'x', which layer 'r1' already produces",
    "in_place_after_reader": r"layer 'r' \(ReLU\) computes blob 'c' in place, but another layer reads",
    "in_place_on_input_after_reader": r"layer 'r' \(ReLU\) computes blob 'data' in place, but another",
    "in_place_twice_same_version": r"layer 'e' \(Eltwise\) computes blob 'data' in place.*reads it twice",
    "in_place_then_reader": RUNS,
    "shared_param_shape_differs": r"layer 'c2' \(Convolution\) cannot share param 'w'.*shape mismatch",
    "shared_param_lr_differs": r"layer 'c2' \(Convolution\).*shared param 'w' has lr_mult 2",
    "too_many_params": r"layer 'r' \(ReLU\) has 1 param specs but only 0",
    "flatten_in_place": r"layer 'f' \(Flatten\) cannot compute in place",
    "crop_one_bottom": r"layer 'c' \(Crop\) takes exactly 2 bottoms, got 1",
    "tile_zero": r"layer 't'.*tiles",
    "argmax_top_k_too_big": r"layer 'a' \(ArgMax\).*top_k 4 exceeds",
    "pool_global_with_stride": r"layer 'p' \(Pooling\).*global pooling takes only stride 1 and pad 0",
    "conv_kernel_size_and_kernel_h": r"layer 'c' \(Convolution\).*kernel_size or kernel_h and kernel_w",
    "softmax_loss_label_count": r"layer 'l' \(SoftmaxWithLoss\).*12 labels for the 18 predictions",
    "accuracy_top_k_too_big": r"layer 'a' \(Accuracy\): top_k 5 exceeds the 4 classes",
    "crop_axis_9": r"layer 'c' \(Crop\).*axis 9 is out of range",
    "reshape_two_inferred": r"layer 'r' \(Reshape\).*one -1",
    "slice_point_beyond": r"layer 's' \(Slice\).*slice points \[9\] must increase",
    "lrn_within_even_size": r"layer 'n' \(LRN\).*odd local_size",
    "duplicate_layer_names": RUNS,
    "concat_axis_and_concat_dim": r"layer 'c' \(Concat\): give concat_param.axis or its legacy concat_dim",
    "slice_axis_and_slice_dim": r"layer 's' \(Slice\): give slice_param.axis or its legacy slice_dim",
    "slice_one_top_axis_out_of_range": r"layer 's' \(Slice\).*axis 1 is out of range for a 1-axis blob",
    "pool_kernel_size_and_kernel_h_w": r"layer 'p' \(Pooling\).*kernel_size or kernel_h and kernel_w",
    # PoolingLayer::LayerSetUp takes kernel_size and leaves a lone kernel_w unread
    "pool_kernel_size_and_lone_kernel_w": RUNS,
    "tile_axis_out_of_range": r"layer 't' \(Tile\): axis -2 is out of range for a 1-axis blob",
    "priorbox_lone_img_w": r"layer 'p' \(PriorBox\): img_h and img_w must both be given and positive",
    "priorbox_step_and_step_h": r"layer 'p' \(PriorBox\): give step or step_h and step_w, not both",
    "prelu_one_axis": r"layer 'p' \(PReLU\): the bottom needs at least 2 axes, got \[3\]",
    "net_state_stage_in_file": RUNS,
    # BaseConvolutionLayer reads pad_h and pad_w alone too, the other at its default 0
    "conv_pad_w_only": RUNS,
    "deconv_pad_h_only": RUNS,
    "dummy_data_shape_and_num": r"\(DummyData\): give dummy_data_param.shape or num/channels/height/width",
    "dummy_data_two_fillers_three_tops": r"\(DummyData\): dummy_data_param.data_filler given 2 times for 3",
    "dummy_data_two_shapes_three_tops": r"'d' \(DummyData\): dummy_data_param.shape given 2 times for 3 top",
    "dummy_data_legacy_without_width": r"'d' \(DummyData\): dummy_data_param.width given 0 times for 1 top",
    "dummy_data_gaussian": RUNS,
}

INPUT = (
    'layer { name: "input" type: "Input" top: "data" '
    "input_param { shape { dim: 1 dim: 3 dim: 6 dim: 6 } } }\n"
)


def _one_line_net_error(text: str) -> NetError:
    with pytest.raises(NetError) as caught:
        build_graph(parse_text(text), with_loss=True)
    message = str(caught.value)
    assert "\n" not in message and "Traceback" not in message and "torch" not in message, message
    return caught.value


def test_every_probe_net_has_a_verdict() -> None:
    assert set(VERDICTS) == set(PROBES)


@pytest.mark.parametrize("probe", sorted(name for name, v in VERDICTS.items() if v != RUNS))
def test_a_net_caffe_refuses_is_refused_at_build_in_one_line_naming_the_layer(probe: str) -> None:
    error = _one_line_net_error(PROBES[probe])
    assert re.search(VERDICTS[probe], str(error)), str(error)


@pytest.mark.parametrize("probe", sorted(name for name, v in VERDICTS.items() if v == RUNS))
def test_a_net_caffe_runs_builds_and_runs(probe: str) -> None:
    net = build_graph(parse_text(PROBES[probe]))
    out = net(**{blob: torch.randn(shape) for blob, shape in net.caffe.inputs.items()})
    assert out and all(torch.isfinite(v).all() for v in out.values())


def test_dummy_data_with_a_random_filler_is_an_input_of_the_shape_it_declares() -> None:
    """Caffe's blobs for the probe (``make_layer_fixtures.py --probe``): d [2, 3] and s [2, 3]; its
    gaussian filler draws d anew at every forward pass, so the graph takes d as an input (constant
    fillers make tops the graph computes: fixture ``dummy_data_constants``)."""
    net = build_graph(parse_text(PROBES["dummy_data_gaussian"]))
    assert net.caffe.inputs == {"d": (2, 3)}
    d = torch.randn(2, 3)
    assert torch.equal(net(d=d)["s"], torch.sigmoid(d))


def test_a_lone_pad_h_or_pad_w_pads_that_axis_only_as_caffe_does() -> None:
    """Caffe's tops for the two probes (``make_layer_fixtures.py --probe``): c [1, 4, 6, 8] and
    d [1, 4, 15, 17] from a 1x3x8x8 input, kernel 3 (the deconvolution with stride 2)."""
    conv = build_graph(parse_text(PROBES["conv_pad_w_only"]))
    deconv = build_graph(parse_text(PROBES["deconv_pad_h_only"]))
    x = torch.randn(1, 3, 8, 8)
    assert tuple(conv(data=x)["c"].shape) == (1, 4, 6, 8)
    assert tuple(deconv(data=x)["d"].shape) == (1, 4, 15, 17)


def test_a_nets_own_state_stages_select_its_layers_and_its_level_does_not_as_in_caffe() -> None:
    """Caffe's blobs for the probe (``make_layer_fixtures.py --probe``): data, its splits, a and c.
    The file's ``state { stage: "deploy" level: 3 }``: its stage counts, its level is replaced by 0."""
    net = build_graph(parse_text(PROBES["net_state_stage_in_file"]))
    assert set(net(data=torch.randn(1, 3, 8, 8))) == {"a", "c"}


def test_pooling_with_kernel_size_leaves_a_lone_kernel_w_unread_as_caffe_does() -> None:
    """Caffe's top for the probe (``make_layer_fixtures.py --probe``): p [1, 3, 7, 7] from 1x3x8x8,
    MAX pooling with kernel_size 2 and kernel_w 3."""
    net = build_graph(parse_text(PROBES["pool_kernel_size_and_lone_kernel_w"]))
    x = torch.randn(1, 3, 8, 8)
    assert torch.equal(net(data=x)["p"], torch.nn.functional.max_pool2d(x, 2, 1))


def test_a_slice_with_one_top_gives_its_bottom_as_caffe_does() -> None:
    net = build_graph(parse_text(PROBES["slice_one_top"]))
    x = torch.randn(1, 3, 8, 8)
    assert torch.equal(net(data=x)["s"], x)


def test_a_stride_far_beyond_the_input_gives_one_output_as_in_caffe() -> None:
    net = build_graph(parse_text(PROBES["conv_huge_stride"]))
    assert net(data=torch.randn(1, 3, 8, 8))["c"].shape == (1, 4, 1, 1)


def test_parameters_beyond_the_machines_memory_are_refused_before_allocation(monkeypatch) -> None:
    text = INPUT + (
        'layer { name: "big" type: "Convolution" bottom: "data" top: "big" '
        "convolution_param { num_output: 64 kernel_size: 3 } }"
    )

    def no_allocation(self, *args, **kwargs):
        raise AssertionError("parameters were allocated")

    monkeypatch.setattr(builder, "memory_limit", lambda device=None: 4096)
    monkeypatch.setattr(fx.GraphModule, "to_empty", no_allocation)
    error = _one_line_net_error(text)
    assert "layer 'big'" in str(error) and "GiB" in str(error)


def test_a_340_byte_prototxt_asking_for_16_gb_is_refused_before_allocation(monkeypatch) -> None:
    text = INPUT + (
        'layer { name: "fc" type: "InnerProduct" bottom: "data" top: "fc" '
        "inner_product_param { num_output: 40000000 } }"
    )
    assert len(text) < 400
    monkeypatch.setattr(fx.GraphModule, "to_empty", lambda self, **kw: pytest.fail("allocated"))
    assert "more than Caffe's limit" in str(_one_line_net_error(text))


def test_given_input_shapes_are_checked_as_declared_ones() -> None:
    with pytest.raises(NetError, match="input 'data' has a zero dimension"):
        build_graph(parse_text(INPUT + 'layer { name: "r" type: "ReLU" bottom: "data" top: "r" }'),
                    input_shapes={"data": (1, 3, 0, 4)})  # fmt: skip


def test_a_python_layer_with_bottoms_is_unsupported_naming_it() -> None:
    text = INPUT + (
        'layer { name: "py" type: "Python" bottom: "data" top: "p" python_param { module: "m" layer: "L" } }'
    )
    with pytest.raises(UnsupportedLayerError, match=r"layer 'py' \(Python\) has bottoms"):
        build_graph(parse_text(text))


def test_a_registered_type_declares_its_counts_and_the_builder_checks_them() -> None:
    @register_layer("TwoIn", bottoms=2, tops=1)
    def two_in(ctx):
        return Converted(function=torch.add, keeps_shape=True)

    try:
        one = INPUT + 'layer { name: "t" type: "TwoIn" bottom: "data" top: "t" }'
        with pytest.raises(NetError, match=r"layer 't' \(TwoIn\) takes exactly 2 bottoms, got 1"):
            build_graph(parse_text(one))
        two = INPUT + 'layer { name: "t" type: "TwoIn" bottom: "data" bottom: "data" top: "t" }'
        assert torch.equal(
            build_graph(parse_text(two))(data=torch.ones(1, 3, 6, 6))["t"], torch.full((1, 3, 6, 6), 2.0)
        )
    finally:
        unregister_layer("TwoIn")


def test_register_layer_refuses_a_malformed_count() -> None:
    with pytest.raises(TypeError, match="bottoms must be"):
        register_layer("Bad", bottoms=(3, 1))


# ---- Several bottoms, a second top, shared parameters, repeated names

MULTI = """
layer { name: "input" type: "Input" top: "a" top: "b"
        input_param { shape { dim: 1 dim: 3 dim: 5 dim: 5 } } }
layer { name: "conv" type: "Convolution" bottom: "a" bottom: "b" top: "ca" top: "cb"
        convolution_param { num_output: 2 kernel_size: 3 } }
"""


def test_a_convolution_with_two_bottoms_applies_one_weight_to_each() -> None:
    net = build_graph(parse_text(MULTI))
    assert [k for k in net.state_dict()] == ["conv.weight", "conv.bias"]
    a, b = torch.randn(1, 3, 5, 5), torch.randn(1, 3, 5, 5)
    out = net(a=a, b=b)
    assert torch.allclose(out["ca"], net.conv(a)) and torch.allclose(out["cb"], net.conv(b))
    assert not torch.allclose(out["ca"], out["cb"])


SHARED = (
    INPUT
    + """
layer { name: "c1" type: "Convolution" bottom: "data" top: "c1" param { name: "w" } param { name: "b" }
        convolution_param { num_output: 3 kernel_size: 3 pad: 1 } }
layer { name: "c2" type: "Convolution" bottom: "c1" top: "c2" param { name: "w" }
        convolution_param { num_output: 3 kernel_size: 3 pad: 1 } }
"""
)


def test_shared_parameters_are_one_tensor_that_training_sees_once() -> None:
    net = build_graph(parse_text(SHARED))
    assert net.c1.weight is net.c2.weight and net.c1.bias is not net.c2.bias
    assert len(list(net.parameters())) == 3
    net(data=torch.randn(1, 3, 6, 6))["c2"].sum().backward()
    assert net.c1.weight.grad is not None and net.c2.weight.grad is net.c1.weight.grad


def _arrays(net) -> dict[str, list[np.ndarray]]:
    state = net.state_dict()
    return {
        layer: [state[k].numpy().copy() for k in keys] for layer, keys in net.caffe.parameter_blobs.items()
    }


def test_a_shared_blob_saved_under_each_layer_loads_once_and_its_copies_must_agree() -> None:
    weights = _arrays(build_graph(parse_text(SHARED), seed=3))
    assert np.array_equal(weights["c1"][0], weights["c2"][0])
    net = build_graph(parse_text(SHARED), weights)
    assert net.c1.weight is net.c2.weight and np.array_equal(net.c1.weight.detach().numpy(), weights["c1"][0])
    weights["c2"][0] = weights["c2"][0] + 1
    with pytest.raises(WeightsMismatchError, match="'c1' and 'c2' share blob 0"):
        build_graph(parse_text(SHARED), weights)


def test_a_shared_blob_stored_only_under_the_sharing_layer_reaches_the_owner() -> None:
    shared = SHARED.replace("pad: 1 } }", 'pad: 1 bias_filler { type: "gaussian" std: 1 } } }', 1)
    weights = _arrays(build_graph(parse_text(shared), seed=5))
    c2_only = {layer: blobs for layer, blobs in weights.items() if layer != "c1"}
    with pytest.raises(WeightsMismatchError, match="layer 'c1'"):  # c1's own bias is missing
        build_graph(parse_text(shared), c2_only)
    net = build_graph(parse_text(shared), c2_only, strict=False)
    assert np.array_equal(net.c1.weight.detach().numpy(), weights["c2"][0])
    assert net.caffe.randomly_initialised == ["c1"]


PERMISSIVE = (
    INPUT
    + """
layer { name: "f1" type: "InnerProduct" bottom: "data" top: "f1" param { name: "w" }
        inner_product_param { num_output: 4 } }
layer { name: "f2" type: "InnerProduct" bottom: "f1" top: "f2" param { name: "w" share_mode: PERMISSIVE }
        inner_product_param { num_output: 108 } }
"""
)


def test_permissive_sharing_between_different_shapes_is_a_clear_unsupported_error() -> None:
    with pytest.raises(UnsupportedLayerError, match=r"layer 'f2'.*PERMISSIVE.*\[4, 108\] and \[108, 4\]"):
        build_graph(parse_text(PERMISSIVE))


DUPLICATES = (
    INPUT
    + """
layer { name: "conv" type: "Convolution" bottom: "data" top: "a"
        convolution_param { num_output: 2 kernel_size: 1 } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "b"
        convolution_param { num_output: 2 kernel_size: 1 } }
"""
)


def test_repeated_layer_names_get_their_own_modules_and_keep_their_caffe_names() -> None:
    net = build_graph(parse_text(DUPLICATES))
    assert net.caffe.layers == [("input", "Input"), ("conv", "Convolution"), ("conv", "Convolution")]
    assert net.a is not net.b and set(dict(net.named_children())) == {"a", "b"}


def test_the_caffemodel_blobs_of_a_repeated_name_go_to_its_first_layer_as_in_caffe() -> None:
    weights = {"conv": [np.full((2, 3, 1, 1), 0.5, np.float32), np.zeros(2, np.float32)]}
    drawn = DUPLICATES.replace(
        'top: "b"\n        convolution_param { num_output: 2',
        'top: "b"\n        convolution_param { weight_filler { type: "xavier" } num_output: 2',
    )
    with pytest.raises(WeightsMismatchError, match="only into the first layer"):
        build_graph(parse_text(drawn), weights)
    with pytest.warns(UserWarning, match="layer 'conv'.*fills it with zeros"):  # Caffe's default: 0
        zeros = build_graph(parse_text(DUPLICATES), weights)
    assert float(zeros.b.weight.abs().max()) == 0
    assert torch.equal(zeros.a.weight, torch.full((2, 3, 1, 1), 0.5))
    net = build_graph(parse_text(DUPLICATES), weights, strict=False)
    assert torch.equal(net.a.weight, torch.full((2, 3, 1, 1), 0.5))
    assert not torch.equal(net.b.weight, net.a.weight)
    assert net.caffe.parameter_blobs["conv"] == ["a.weight", "a.bias"]


def test_max_pooling_gives_its_mask_as_a_second_top() -> None:
    text = INPUT + (
        'layer { name: "p" type: "Pooling" bottom: "data" top: "p" top: "m" '
        "pooling_param { pool: MAX kernel_size: 2 stride: 2 } }"
    )
    net = build_graph(parse_text(text))
    x = torch.arange(36.0).reshape(1, 1, 6, 6).expand(1, 3, 6, 6).contiguous()
    out = net(data=x)
    assert out["m"].dtype == torch.float32
    assert out["m"][0, 0].tolist() == [[7.0, 9.0, 11.0], [19.0, 21.0, 23.0], [31.0, 33.0, 35.0]]
    assert torch.equal(out["p"], x.flatten(2).gather(2, out["m"].flatten(2).long()).reshape(out["p"].shape))


def test_a_net_with_shared_parameters_round_trips_through_a_converted_file(tmp_path) -> None:
    from converters import load_converted, save_converted

    net = build_graph(parse_text(SHARED))
    for name in ("x.safetensors", "x.pt"):
        save_converted(net, tmp_path / name)
        back = load_converted(tmp_path / name)
        x = torch.randn(1, 3, 6, 6)
        assert torch.equal(back(data=x)["c2"], net(data=x)["c2"]) and back.c1.weight is back.c2.weight


def test_a_pooling_stride_far_beyond_the_input_runs_without_padding_that_far() -> None:
    text = INPUT + (
        'layer { name: "p" type: "Pooling" bottom: "data" top: "p" top: "m" '
        "pooling_param { pool: MAX kernel_size: 3 stride: 2147483647 } }"
    )
    out = build_graph(parse_text(text))(data=torch.randn(1, 3, 6, 6))
    # As Caffe computes it for stride 100 (case pool_max_mask): windows past the input are empty.
    assert out["p"].shape == (1, 3, 2, 2) and out["m"][0, 0, 1].tolist() == [-1.0, -1.0]
    assert float(out["p"][0, 0, 1, 1]) == -torch.finfo(torch.float32).max


@pytest.mark.parametrize(
    ("layer", "message"),
    [
        (
            'type: "Reshape" reshape_param { shape { dim: 0 dim: -1 dim: 7 } }',
            r"cannot take the shape \[0, -1, 7\]",
        ),
        ('type: "Reshape" reshape_param { shape { dim: -1 dim: -1 } }', "one -1"),
        ('type: "Flatten" flatten_param { axis: 9 }', "axis 9 is out of range"),
        ('type: "Slice" top: "y2" slice_param { slice_point: 9 }', r"slice points \[9\] must increase"),
        ('type: "Slice" top: "y2" top: "y3" top: "y4" slice_param { axis: 2 }', "4 tops do not divide"),
        ('type: "LRN" lrn_param { local_size: 2147483647 }', "padded work blob"),
    ],
)
def test_shape_layers_check_their_parameters_against_the_bottom_as_caffe_does(
    layer: str, message: str
) -> None:
    text = INPUT + f'layer {{ name: "x" bottom: "data" top: "y" {layer} }}'
    error = _one_line_net_error(text)
    assert "layer 'x'" in str(error) and re.search(message, str(error)), str(error)


TWO_INPUTS = (
    'layer { name: "input" type: "Input" top: "a" top: "b" '
    "input_param { shape { dim: 1 dim: 3 dim: 8 dim: 8 } shape { dim: 1 dim: 3 dim: 4 dim: 4 } } }\n"
)


@pytest.mark.parametrize(
    ("param", "message"),
    [
        ("axis: 9", "axis 9 is out of range"),
        ("offset: 1 offset: 2 offset: 3", "3 offsets for the 2 axes"),
        ("offset: 5", "offset 5 \\+ size 4 exceeds 8"),
    ],
)
def test_a_crop_caffe_refuses_is_refused_naming_the_layer(param: str, message: str) -> None:
    text = (
        TWO_INPUTS
        + f'layer {{ name: "c" type: "Crop" bottom: "a" bottom: "b" top: "c" crop_param {{ {param} }} }}'
    )
    error = _one_line_net_error(text)
    assert "layer 'c'" in str(error) and re.search(message, str(error)), str(error)


LOSS_INPUTS = (
    'layer { name: "input" type: "Input" top: "score" top: "label" '
    "input_param { shape { dim: 2 dim: 4 dim: 3 dim: 3 } shape { dim: 2 dim: 1 dim: 3 dim: 2 } } }\n"
)


@pytest.mark.parametrize("kind", ["SoftmaxWithLoss", "Accuracy"])
def test_a_loss_or_accuracy_with_a_label_per_prediction_missing_is_refused(kind: str) -> None:
    text = LOSS_INPUTS + f'layer {{ name: "l" type: "{kind}" bottom: "score" bottom: "label" top: "l" }}'
    with pytest.raises(NetError, match=rf"layer 'l' \({kind}\).*12 labels for the 18 predictions"):
        build_graph(parse_text(text), with_loss=True)


def test_an_accuracy_top_k_above_the_class_count_is_refused() -> None:
    text = LOSS_INPUTS.replace("dim: 2 dim: 1 dim: 3 dim: 2", "dim: 2 dim: 1 dim: 3 dim: 3") + (
        'layer { name: "a" type: "Accuracy" bottom: "score" bottom: "label" top: "a" '
        "accuracy_param { top_k: 5 } }"
    )
    with pytest.raises(NetError, match=r"layer 'a' \(Accuracy\): top_k 5 exceeds the 4 classes"):
        build_graph(parse_text(text), with_loss=True)


def test_the_label_check_waits_for_real_shapes_when_the_inputs_are_guessed() -> None:
    text = """
    layer { name: "data" type: "Python" top: "data" top: "label" python_param { module: "m" layer: "L" } }
    layer { name: "score" type: "Convolution" bottom: "data" top: "score" convolution_param { num_output: 3 kernel_size: 1 } }
    layer { name: "loss" type: "SoftmaxWithLoss" bottom: "score" bottom: "label" top: "loss" }
    """  # noqa: E501
    net = build_graph(parse_text(text), with_loss=True)  # label guessed 1x3x500x500: no refusal
    loss = net(data=torch.randn(1, 3, 5, 5), label=torch.zeros(1, 1, 5, 5))["loss"]
    assert loss.shape == () and torch.isfinite(loss)
    with pytest.raises(NetError, match="labels for the"):
        build_graph(
            parse_text(text), with_loss=True, input_shapes={"data": (1, 3, 5, 5), "label": (1, 1, 4, 5)}
        )


def test_parameter_blobs_list_the_layers_in_net_order() -> None:
    net = build_graph(parse_text(SHARED))
    assert list(net.caffe.parameter_blobs) == ["c1", "c2"]
    assert list(net.caffe.parameter_shapes) == ["c1", "c2"]


def test_a_built_in_converter_restored_after_an_override_keeps_its_counts() -> None:
    from converters.layers.registry import _CONVERTERS, blob_counts

    original = _CONVERTERS["ReLU"]
    try:
        register_layer("ReLU", override=True)(lambda ctx: Converted(function=torch.abs, keeps_shape=True))
        assert blob_counts("ReLU").tops is None  # the override declared none
    finally:
        register_layer("ReLU", override=True)(original)
    assert blob_counts("ReLU").tops == (1, 1)
    _one_line_net_error(PROBES["relu_two_tops"])


# Found by the fuzz harness (tests/fuzz): fork layers given two bottoms, none, and an unnamed input.
FORK_INPUTS = (
    'layer { name: "in" type: "Input" top: "a" top: "b" '
    "input_param { shape { dim: 1 dim: 4 dim: 4 dim: 5 } } } "
)


@pytest.mark.parametrize("kind", ["Normalize", "ReLU6", "ShuffleChannel", "Permute", "Reorg", "BN"])
def test_a_one_bottom_fork_layer_given_two_bottoms_is_refused_naming_the_count(kind: str) -> None:
    text = FORK_INPUTS + f'layer {{ name: "x" type: "{kind}" bottom: "a" bottom: "b" top: "c" }}'
    with pytest.raises(NetError, match=f"layer 'x' \\({kind}\\) takes exactly 1 bottom, got 2"):
        build_graph(parse_text(text))


def test_a_fork_layer_without_a_bottom_is_refused_in_words_not_python_text() -> None:
    with pytest.raises(NetError, match="layer 'r' \\(ReLU6\\) takes exactly 1 bottom, got 0") as error:
        build_graph(parse_text(FORK_INPUTS + 'layer { name: "r" type: "ReLU6" top: "data" }'))
    assert "index" not in str(error.value)


def test_every_built_in_layer_type_declares_its_bottom_and_top_counts() -> None:
    from converters.layers.registry import _CONVERTERS, BlobCounts, blob_counts

    # A Python layer's counts are its module's business (one with bottoms is unsupported anyway).
    undeclared = [
        t
        for t, f in _CONVERTERS.items()
        if f.__module__.startswith("converters.layers") and blob_counts(t) == BlobCounts() and t != "Python"
    ]
    assert not undeclared


def test_an_unnamed_input_blob_is_refused_at_build() -> None:
    text = (
        'layer { name: "in" type: "Input" top: "" input_param { shape { dim: 1 dim: 1 dim: 2 dim: 2 } } } '
        'layer { name: "r" type: "ReLU" bottom: "" top: "y" }'
    )
    with pytest.raises(NetError, match="input blob '' cannot be a keyword input"):
        build_graph(parse_text(text))


def test_a_bilinear_filler_on_a_kernel_that_is_not_square_is_refused_naming_the_layer() -> None:
    # Caffe's BilinearFiller CHECKs a 4-D blob with width == height
    text = (
        'layer { name: "in" type: "Input" top: "data" '
        "input_param { shape { dim: 1 dim: 2 dim: 4 dim: 4 } } }\n"
        'layer { name: "up" type: "Deconvolution" bottom: "data" top: "up" convolution_param { num_output: 2 '
        'kernel_h: 4 kernel_w: 2 stride: 2 bias_term: false weight_filler { type: "bilinear" } } }\n'
    )
    with pytest.raises(NetError) as error:
        build_graph(parse_text(text))
    message = "layer 'up' (Deconvolution) blob 0: the bilinear filler needs a square 4-D kernel"
    assert message in str(error.value)


@pytest.mark.parametrize("device", ["bogus", "cuda:7", "xpu"])
def test_a_device_this_machine_lacks_is_one_line_in_the_api_too(device: str, tmp_path: pathlib.Path) -> None:
    """load_caffe, load_converted (so weights.load_model and the hub entries) and load_solver check
    ``device`` as the commands' ``--device`` does,
    before anything is built (torch's own errors are long and name no fix)."""
    import converters
    from converters.errors import UsageError

    if device.startswith("cuda") and torch.cuda.device_count() > 7:
        pytest.skip("this machine has that device")
    fixtures = pathlib.Path(__file__).parent / "fixtures"
    net = fixtures / "layers" / "conv_basic" / "net.prototxt"
    converters.save_converted(converters.load_caffe(net), tmp_path / "net.safetensors")
    calls = [
        lambda: converters.load_caffe(net, device=device),
        lambda: converters.load_solver(fixtures / "solvers" / "sgd_fixed" / "solver.prototxt", device=device),
        lambda: converters.load_converted(tmp_path / "net.safetensors", device=device),
    ]
    for call in calls:
        with pytest.raises(UsageError, match=rf"device {device!r}|device {device}:") as caught:
            call()
        assert "\n" not in str(caught.value)


def test_a_blob_larger_than_the_machines_memory_is_refused_before_anything_runs(monkeypatch) -> None:
    """A zoom of 2000 or an input of 20000 x 20000 makes blobs under Caffe's per-blob limit that the
    machine cannot hold: refused when the net is built, naming the blob, not at the forward pass."""
    text = (
        'layer { name: "in" type: "Input" top: "x" '
        "input_param { shape { dim: 1 dim: 2 dim: 30 dim: 30 } } }\n"
        'layer { name: "z" type: "Interp" bottom: "x" top: "zoomed" interp_param { zoom_factor: 20 } }'
    )
    monkeypatch.setattr(builder, "memory_limit", lambda device=None: 2**20)  # a 1 MiB machine
    monkeypatch.setattr(fx.GraphModule, "to_empty", lambda self, **kw: pytest.fail("allocated"))
    message = str(_one_line_net_error(text))
    assert "blob 'zoomed' [1, 2, 581, 581] needs" in message and "GiB of memory of cpu" in message


def test_the_memory_bound_is_what_an_address_space_limit_leaves_not_the_machines_memory() -> None:
    """Under ``ulimit -v`` (a container, a fuzz worker) a declared size beyond what the limit leaves
    is refused before allocation rather than ending in MemoryError."""
    code = (
        "import resource\n"
        "from converters.graph.builder import memory_limit\n"
        "machine = memory_limit()\n"
        "with open('/proc/self/statm') as f: mapped = int(f.read().split()[0]) * 4096\n"
        "resource.setrlimit(resource.RLIMIT_AS, (mapped + 2**30, resource.RLIM_INFINITY))\n"
        "print(machine, memory_limit())\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True,
        cwd=pathlib.Path(__file__).resolve().parent.parent,
    )
    machine, limited = map(int, done.stdout.split())
    assert limited <= 2**30 < machine


def test_the_parameter_memory_check_counts_the_blob_drawn_before_it_is_copied_in(monkeypatch) -> None:
    """A 1 GiB weight blob needs 2 GiB while it loads (drawn or converted, then copied into place):
    a memory that holds the parameters but not that copy is refused up front, not a MemoryError."""
    text = INPUT + (
        'layer { name: "fc" type: "InnerProduct" bottom: "data" top: "fc" '
        "inner_product_param { num_output: 1000 bias_term: false } }"
    )
    weights = 4 * 1000 * (3 * 6 * 6)  # float32, 1000 outputs of the 3 x 6 x 6 input
    monkeypatch.setattr(builder, "memory_limit", lambda device=None: weights + weights // 2)
    monkeypatch.setattr(fx.GraphModule, "to_empty", lambda self, **kw: pytest.fail("allocated"))
    assert "layer 'fc'" in str(_one_line_net_error(text))
    monkeypatch.undo()
    monkeypatch.setattr(builder, "memory_limit", lambda device=None: 2 * weights)
    build_graph(parse_text(text))

