"""Skipping the constant band of FCN's pad-100 border gives the plain graph's numbers exactly
(up to float rounding), at every input size (Caffe parity of the default graph: test_fcn_parity)."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from converters import build_graph
from converters.caffe.text import parse_text
from converters.fcn.nets import net_definition
from converters.graph import border
from converters.graph.border import AxisWindow, BorderPlanner, axis_regions, removable, skip_constant_border

SIZES = [(1, 1, 1), (37, 53, 1), (17, 23, 2), (33, 1, 1)]


def _relative_error(got: torch.Tensor, expected: torch.Tensor) -> float:
    return float((got - expected).abs().max()) / max(float(expected.abs().max()), 1e-30)


@pytest.mark.parametrize(
    ("model", "copy_cost"),
    [("voc-fcn8s", border.COPY_COST), ("voc-fcn8s", 0), ("voc-fcn-alexnet", 0), ("nyud-fcn32s-color-hha", 0)],
)
def test_skipping_the_border_gives_the_plain_outputs_at_every_size(
    model: str, copy_cost: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Copy cost 0 ends a stage wherever fewer rows may be removed, so blobs read outside the
    chain (FCN-8s' pool3) get restored too. Each size runs twice (the second forward computes only
    the image's rect: test_graph_cropping)."""
    monkeypatch.setattr(border, "COPY_COST", copy_cost)
    plain = build_graph(net_definition(model, "deploy", width=0.0625), seed=4)
    with torch.no_grad():  # (Caffe's bias filler, constant 0, would make every band row 0)
        for name, parameter in plain.named_parameters():
            if name.endswith("bias"):
                parameter.copy_(torch.randn(parameter.shape, generator=torch.Generator().manual_seed(3)))
    fast = skip_constant_border(copy.deepcopy(plain))
    planners = [m for m in fast.modules() if isinstance(m, BorderPlanner)]
    assert planners and all(p.stages for p in planners)
    if copy_cost == 0 and model == "voc-fcn8s":
        assert planners[0].outside and len(planners[0].stages) > 2
    generator = torch.Generator().manual_seed(5)
    for height, width, batch in SIZES:
        inputs = {
            name: torch.randn(batch, shape[1], height, width, generator=generator) * 50
            for name, shape in plain.caffe.inputs.items()
        }
        for _ in range(2):
            with torch.no_grad():
                expected, got = plain(**inputs), fast(**inputs)
            for blob in expected:
                assert got[blob].shape == expected[blob].shape
                assert _relative_error(got[blob], expected[blob]) < 1e-5, (height, width, batch, blob)
    plan = planners[0].plan(37, 53)
    assert plan.pad[0] < planners[0].first[0].pad  # rows were really skipped


def test_rows_outside_the_regions_are_identical_and_untouched_by_the_image() -> None:
    """The arithmetic against real values: band rows are equal to one another, and changing the
    image changes nothing outside the rows it says feel the image."""
    torch.manual_seed(0)
    layers = nn.Sequential(
        nn.Conv2d(2, 3, 3, padding=40),
        nn.ReLU(),
        nn.Conv2d(3, 3, 3, padding=1),
        nn.MaxPool2d(2, 2, ceil_mode=True),
        nn.Conv2d(3, 3, 3, padding=1),
    )
    first = AxisWindow(3, 1, 40)
    chain = [AxisWindow(), AxisWindow(3, 1, 1), AxisWindow(2, 2, 0, pooling=True), AxisWindow(3, 1, 1)]
    x = torch.randn(1, 2, 9, 9)
    y = x.clone()
    y[..., 4, :] += 1.0  # only row 4 of the image changes
    regions = axis_regions(9, first, 40, chain)[-1]
    with torch.no_grad():
        a, b = layers(x), layers(y)
    assert a.shape[-2] == regions.length
    top, (start, end), bottom = regions.top, regions.image, regions.bottom
    assert 0 < top < start < end < regions.length - bottom
    band = torch.cat([a[..., top:start, :], a[..., end : regions.length - bottom, :]], dim=-2)
    assert torch.equal(band, band[..., :1, :].expand_as(band))
    outside = torch.ones(regions.length, dtype=torch.bool)
    outside[start:end] = False
    assert torch.equal(a[..., outside, :], b[..., outside, :])
    assert not torch.equal(a[..., start:end, :], b[..., start:end, :])


def test_the_removed_rows_are_the_most_the_strides_and_bands_allow() -> None:
    first = AxisWindow(3, 1, 100)
    chain = [AxisWindow(3, 1, 1), AxisWindow(2, 2, 0, pooling=True), AxisWindow(3, 1, 1)]
    strides = [1, 1, 2, 2]
    removed = removable(50, first, chain, strides)
    assert removed > 0 and removed % 2 == 0
    assert all(r.banded for r in axis_regions(50, first, 100 - removed, chain))
    assert not all(r.banded for r in axis_regions(50, first, 100 - removed - 2, chain))


def test_a_blob_of_the_wrong_size_is_refused_rather_than_padded() -> None:
    plain = build_graph(net_definition("voc-fcn32s", "deploy", width=0.0625), seed=1)
    fast = skip_constant_border(copy.deepcopy(plain))
    planner = next(m for m in fast.modules() if isinstance(m, BorderPlanner))
    plan = planner.plan(20, 20)
    position = planner.stages[-1]
    height, width = plan.lengths["stage", position]
    with pytest.raises(RuntimeError, match="the plan expected"):
        border.expand(torch.zeros(1, 1, height + 1, width), plan, position)


def test_nets_without_a_large_padding_are_left_alone() -> None:
    net = build_graph(
        parse_text(
            'layer { name: "input" type: "Input" top: "data"'
            " input_param { shape { dim: 1 dim: 3 dim: 8 dim: 8 } } }\n"
            'layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"'
            " convolution_param { num_output: 2 kernel_size: 3 pad: 1 } }"
        )
    )
    code = net.code
    assert skip_constant_border(net).code == code


def test_gradients_through_the_skipped_border_are_the_plain_ones() -> None:
    plain = build_graph(net_definition("voc-fcn16s", "deploy", width=0.0625), seed=2)
    fast = skip_constant_border(copy.deepcopy(plain))
    x = torch.randn(1, 3, 21, 26, generator=torch.Generator().manual_seed(3)) * 50
    plain(data=x)["score"].square().sum().backward()
    fast(data=x)["score"].square().sum().backward()
    for (name, a), b in zip(plain.named_parameters(), fast.parameters(), strict=True):
        assert _relative_error(b.grad, a.grad) < 1e-4, name


def test_a_kernel_overhanging_the_padded_input_by_less_than_a_stride_keeps_caffes_one_output() -> None:
    """Caffe's output length is ``(input + 2 pad - kernel) / stride + 1`` in C++'s division, which
    rounds toward zero: a 2-wide kernel of stride 2 over one unpadded column gives one column. The
    planner computes lengths so too, at the declared size and at another."""
    text = (
        'layer { name: "input" type: "Input" top: "data"'
        " input_param { shape { dim: 1 dim: 2 dim: 21 dim: 4 } } }\n"
        'layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"'
        " convolution_param { num_output: 3 kernel_size: 3 stride: 3 } }\n"
        'layer { name: "conv2" type: "Convolution" bottom: "conv1" top: "conv2" convolution_param {'
        " num_output: 2 kernel_h: 2 kernel_w: 2 stride_h: 1 stride_w: 2 pad_h: 3 pad_w: 0 } }"
    )
    plain = build_graph(parse_text(text), seed=3)
    fast = skip_constant_border(copy.deepcopy(plain))
    generator = torch.Generator().manual_seed(6)
    for height, width in ((21, 4), (21, 6), (40, 3)):
        x = torch.randn(1, 2, height, width, generator=generator)
        with torch.no_grad():
            expected, got = plain(data=x)["conv2"], fast(data=x)["conv2"]
        assert expected.shape[-1] == 1 and got.shape == expected.shape
        assert _relative_error(got, expected) < 1e-6
    assert border.AxisWindow(kernel=2, stride=2).size(1) == 1
