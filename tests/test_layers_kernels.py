"""Our own kernels that stand in for PyTorch's where its own would be too slow: each gives
PyTorch's values (in float64, to rounding) on the cases that take it."""

from __future__ import annotations

import pytest
import torch


@pytest.mark.parametrize(
    ("stride", "pad", "dilation", "groups"),
    [((3, 2, 2), (1, 1, 0), (1, 1, 1), 1), ((5, 1, 4), (0, 2, 1), (2, 1, 1), 2),
     ((9, 2, 2), (4, 1, 1), (1, 1, 1), 1), ((2, 7, 2), (1, 0, 3), (1, 2, 1), 1),
     ((4, 2, 2), (5, 1, 1), (3, 1, 1), 1)],
)  # fmt: skip
def test_a_3d_transposed_convolution_striding_past_its_kernel_gives_torchs_sums_plane_by_plane(
    stride, pad, dilation, groups
) -> None:
    """Where a stride passes the kernel, torch's CPU kernel takes time quadratic in it (the params fuzz
    target's depth stride of 65,536 took two minutes); the plane-by-plane path gives the same values."""
    import torch.nn.functional as F

    from converters.layers.convolution import conv_transpose3d

    generator = torch.Generator().manual_seed(sum(stride))
    x = torch.randn(2, 4, 3, 5, 4, generator=generator, dtype=torch.float64)
    weight = torch.randn(4, 3, 3, 3, 3, generator=generator, dtype=torch.float64)
    bias = torch.randn(3 * groups, generator=generator, dtype=torch.float64)
    expected = F.conv_transpose3d(x, weight, bias, stride, pad, 0, groups, dilation)
    torch.testing.assert_close(conv_transpose3d(x, weight, bias, stride, pad, dilation, groups), expected)
    meta = conv_transpose3d(x.to("meta"), weight.to("meta"), None, stride, pad, dilation, groups)
    assert meta.shape == expected.shape  # the builder's shape pass runs it on the meta device
