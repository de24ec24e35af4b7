"""MAX pooling (VGG's 2x2 stride 2, ResNet's 3x3 stride 2, GoogLeNet's 3x3 stride 1 pad 1, ...) runs,
for inference, as running maxima over strided views (converters.layers.pooling.max_pool_pairwise):
the values of PyTorch's own kernel, which the Caffe parity tests of the pooling layer hold to Caffe,
on every size parity, with NaN, and its gradient untouched."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from converters.layers.pooling import CaffePooling, max_pool_pairwise

SHAPES = [(1, 3, 5, 7), (2, 4, 6, 6), (1, 1, 1, 1), (1, 2, 1, 5), (3, 2, 7, 1), (2, 8, 9)]


@pytest.mark.parametrize("shape", SHAPES)
def test_the_fast_2x2_max_pooling_gives_pytorchs_values_for_every_size_parity(shape) -> None:
    x = torch.randn(shape, generator=torch.Generator().manual_seed(sum(shape)))
    x.view(-1)[::7] = float("nan")
    x.view(-1)[1::5] = 0.0  # ties
    expected = F.max_pool2d(x, 2, 2, ceil_mode=True)
    got = max_pool_pairwise(x, (2, 2), (2, 2), (0, 0))
    assert got.shape == expected.shape
    assert torch.equal(got.isnan(), expected.isnan())
    assert torch.equal(got.nan_to_num(), expected.nan_to_num())


WINDOWS = [(k, s, p) for k in (1, 2, 3, 4, 5) for s in (1, 2, 3) for p in (0, 1, 2) if 2 * p <= k]


@pytest.mark.parametrize(("kernel", "stride", "pad"), WINDOWS)
def test_every_window_gives_pytorchs_values_at_every_size_and_layout(kernel, stride, pad) -> None:
    generator = torch.Generator().manual_seed(kernel * 100 + stride * 10 + pad)
    for height, width in ((1, 1), (5, 7), (6, 6), (9, 4), (13, 11)):
        if min(height, width) + 2 * pad < kernel:
            continue
        x = torch.randn(2, 3, height, width, generator=generator)
        x.view(-1)[::7] = float("nan")
        x.view(-1)[1::5] = 0.0  # ties
        x.view(-1)[2::11] = -float("inf")
        expected = F.max_pool2d(x, kernel, stride, pad, ceil_mode=True)
        for layout in (torch.contiguous_format, torch.channels_last):
            laid = x.contiguous(memory_format=layout)
            got = max_pool_pairwise(laid, (kernel,) * 2, (stride,) * 2, (pad,) * 2)
            assert got.shape == expected.shape
            assert got.is_contiguous(memory_format=layout) or laid.is_contiguous()  # (1 x 1: both layouts)
            torch.testing.assert_close(got, expected, rtol=0, atol=0, equal_nan=True)


def test_the_pooling_layer_takes_the_fast_path_only_for_inference() -> None:
    layer = CaffePooling("MAX", (2, 2), (2, 2), (0, 0))
    x = torch.randn(1, 2, 5, 6, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        assert torch.equal(layer(x), max_pool_pairwise(x, (2, 2), (2, 2), (0, 0)))
    x = torch.tensor([[[[1.0, 1.0], [0.0, 0.0]]]], requires_grad=True)  # a tie: one input gets it all
    layer(x).sum().backward()
    assert sorted(x.grad.flatten().tolist()) == [0.0, 0.0, 0.0, 1.0]
