"""Our own kernels that stand in for PyTorch's where its own would be too slow: each gives
PyTorch's values (in float64, to rounding) on the cases that take it."""

from __future__ import annotations

import random

import pytest
import torch
import torch.nn.functional as F

from converters.layers.convolution import conv_transpose

TRANSPOSED = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}


def _cases(count: int) -> list[tuple]:
    rng = random.Random(20261206)
    cases = []
    while len(cases) < count:
        dims, groups = rng.choice([1, 2, 3]), rng.choice([1, 2])
        kernel = [rng.randint(1, 3) for _ in range(dims)]
        dilation = [rng.randint(1, 3) for _ in range(dims)]
        stride = [rng.randint(1, 9) for _ in range(dims)]
        size = [rng.randint(1, 5) for _ in range(dims)]
        pad = [rng.randint(0, 3) for _ in range(dims)]
        extents = [(k - 1) * d + 1 for k, d in zip(kernel, dilation, strict=True)]
        leaves_output = all(
            (n - 1) * s + e - 2 * p >= 1 for n, s, e, p in zip(size, stride, extents, pad, strict=True)
        )
        if leaves_output and any(s > e for s, e in zip(stride, extents, strict=True)):
            cases.append((dims, groups, kernel, dilation, stride, size, pad))
    return cases


@pytest.mark.parametrize(("dims", "groups", "kernel", "dilation", "stride", "size", "pad"), _cases(60))
def test_a_transposed_convolution_striding_past_its_kernel_gives_torchs_sums_with_its_blocks_spaced_out(
    dims, groups, kernel, dilation, stride, size, pad
) -> None:
    """Where a stride passes the kernel's extent, torch's CPU kernels take time quadratic in it (the
    params fuzz target's strides of 65,536 took minutes); the spaced-out path gives the same values."""
    generator = torch.Generator().manual_seed(sum(stride) + dims)
    x = torch.randn(2, 4, *size, generator=generator, dtype=torch.float64)
    weight = torch.randn(4, 3, *kernel, generator=generator, dtype=torch.float64)
    bias = torch.randn(3 * groups, generator=generator, dtype=torch.float64)
    expected = TRANSPOSED[dims](x, weight, bias, stride, pad, 0, groups, dilation)
    torch.testing.assert_close(conv_transpose(x, weight, bias, stride, pad, dilation, groups), expected)
    meta = conv_transpose(x.to("meta"), weight.to("meta"), None, stride, pad, dilation, groups)
    assert meta.shape == expected.shape  # the builder's shape pass runs it on the meta device


def test_a_huge_stride_costs_what_its_output_costs() -> None:
    """A width stride of 65,536 over 5 columns: torch's own kernel runs for minutes on this; the
    spaced-out path only writes the 2 x 2 x 3 x 262,144 output (compared with a loop over inputs)."""
    generator = torch.Generator().manual_seed(3)
    x = torch.randn(2, 4, 3, 5, generator=generator, dtype=torch.float64)
    weight = torch.randn(4, 2, 3, 2, generator=generator, dtype=torch.float64)
    out = conv_transpose(x, weight, None, (1, 65536), (1, 1))
    assert out.shape == (2, 2, 3, (5 - 1) * 65536 + 2 - 2)
    expected = torch.zeros(2, 2, 5, (5 - 1) * 65536 + 2)  # unpadded, then cropped by the pad
    expected = expected.double()
    for i in range(3):
        for j in range(5):
            block = torch.einsum("nc,cokl->nokl", x[:, :, i, j], weight)
            expected[:, :, i : i + 3, j * 65536 : j * 65536 + 2] += block
    torch.testing.assert_close(out, expected[:, :, 1:-1, 1:-1])
