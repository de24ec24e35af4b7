"""VGG's 2x2 stride-2 MAX pooling runs, for inference, as pairwise maxima over strided views
(converters.layers.pooling.max_pool_2x2): the values of PyTorch's own kernel, which the Caffe parity
tests of the pooling layer hold to Caffe, on every size parity, with NaN, and its gradient untouched."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from converters.layers.pooling import CaffePooling, max_pool_2x2

SHAPES = [(1, 3, 5, 7), (2, 4, 6, 6), (1, 1, 1, 1), (1, 2, 1, 5), (3, 2, 7, 1), (2, 8, 9)]


@pytest.mark.parametrize("shape", SHAPES)
def test_the_fast_2x2_max_pooling_gives_pytorchs_values_for_every_size_parity(shape) -> None:
    x = torch.randn(shape, generator=torch.Generator().manual_seed(sum(shape)))
    x.view(-1)[::7] = float("nan")
    x.view(-1)[1::5] = 0.0  # ties
    expected = F.max_pool2d(x, 2, 2, ceil_mode=True)
    got = max_pool_2x2(x)
    assert got.shape == expected.shape
    assert torch.equal(got.isnan(), expected.isnan())
    assert torch.equal(got.nan_to_num(), expected.nan_to_num())


def test_the_pooling_layer_takes_the_fast_path_only_for_inference() -> None:
    layer = CaffePooling("MAX", (2, 2), (2, 2), (0, 0))
    x = torch.randn(1, 2, 5, 6, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        assert torch.equal(layer(x), max_pool_2x2(x))
    x = torch.tensor([[[[1.0, 1.0], [0.0, 0.0]]]], requires_grad=True)  # a tie: one input gets it all
    layer(x).sum().backward()
    assert sorted(x.grad.flatten().tolist()) == [0.0, 0.0, 0.0, 1.0]
