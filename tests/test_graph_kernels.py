"""Our two convolution kernels (converters.graph.kernels) compute F.conv2d: checked against PyTorch's
convolution in float64 over odd sizes, paddings, strides, batches and bands, never against themselves."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from converters.graph import kernels
from converters.graph.kernels import (
    gemm_conv2d,
    winograd_f2_conv2d,
    winograd_f2_conv2d_nhwc,
    winograd_f2_weights,
)

WINOGRAD_CASES = [  # batch, in channels, out channels, height, width, padding
    (1, 3, 5, 1, 1, 1), (2, 4, 6, 7, 9, 0), (1, 8, 3, 5, 4, 2), (3, 5, 7, 12, 13, 1),
    (1, 2, 2, 3, 3, 0), (1, 16, 16, 40, 33, 1), (2, 3, 4, 6, 2, 3),
]  # fmt: skip
GEMM_CASES = [  # batch, in, out, height, width, kernel h, kernel w, stride, padding
    (1, 3, 5, 9, 9, 3, 3, 1, 1), (2, 4, 6, 17, 19, 7, 5, 2, 3), (1, 8, 3, 5, 4, 1, 1, 1, 0),
    (2, 8, 3, 5, 4, 1, 1, 2, 0), (1, 5, 4, 30, 20, 4, 4, 4, 0), (1, 3, 2, 1, 1, 1, 1, 1, 2),
    (1, 6, 9, 22, 22, 7, 7, 1, 0), (2, 16, 7, 6, 5, 1, 1, 1, 0),
]  # fmt: skip


def _close(got, exact) -> None:
    """Within float32 rounding of the sums: 2e-6 of the largest output (sums of up to 300 terms)."""
    torch.testing.assert_close(got.double(), exact, rtol=0, atol=2e-6 * float(exact.abs().max()))


def _exact(x, weight, bias, stride=1, padding=0):
    return F.conv2d(x.double(), weight.double(), None if bias is None else bias.double(), stride=stride,
                    padding=padding)  # fmt: skip


def _draw(seed: int, *shapes):
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(shape, generator=generator) for shape in shapes]


@pytest.mark.parametrize("case", WINOGRAD_CASES, ids=str)
@pytest.mark.parametrize("with_bias", [True, False])
def test_winograd_f2_computes_a_3x3_convolution_of_any_size_and_padding(case, with_bias) -> None:
    batch, cin, cout, height, width, pad = case
    x, weight, bias = _draw(sum(case), (batch, cin, height, width), (cout, cin, 3, 3), (cout,))
    bias = bias if with_bias else None
    got = winograd_f2_conv2d(x, winograd_f2_weights(weight), bias, (pad, pad))
    exact = _exact(x, weight, bias, padding=pad)
    assert got.shape == exact.shape and got.is_contiguous() and got.dtype == torch.float32
    _close(got, exact)
    # channels-last in and out (converters.graph.layout), the same sums
    last = winograd_f2_conv2d_nhwc(
        x.contiguous(memory_format=torch.channels_last), winograd_f2_weights(weight), bias, (pad, pad)
    )
    assert last.shape == exact.shape and last.is_contiguous(memory_format=torch.channels_last)
    _close(last, exact)


@pytest.mark.parametrize("case", GEMM_CASES, ids=str)
@pytest.mark.parametrize("with_bias", [True, False])
def test_gemm_computes_a_convolution_of_any_kernel_stride_and_padding(case, with_bias) -> None:
    batch, cin, cout, height, width, kh, kw, stride, pad = case
    x, weight, bias = _draw(sum(case), (batch, cin, height, width), (cout, cin, kh, kw), (cout,))
    bias = bias if with_bias else None
    got = gemm_conv2d(x, weight, bias, (stride, stride), (pad, pad))
    exact = _exact(x, weight, bias, stride, pad)
    assert got.shape == exact.shape
    _close(got, exact)
    # a channels-last input (converters.graph.layout): a 1x1 layer keeps the layout, any other converts
    last = gemm_conv2d(
        x.contiguous(memory_format=torch.channels_last), weight, bias, (stride, stride), (pad, pad)
    )
    pointwise = kh == kw == stride == 1 and pad == 0 and min(cin, height * width) > 1
    assert last.is_contiguous(memory_format=torch.channels_last) if pointwise else last.is_contiguous()
    _close(last, exact)


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
@pytest.mark.parametrize("kernel", [1, 3])
def test_gemm_adds_the_bias_to_the_finished_sums_as_caffe_does(layout, kernel) -> None:
    # Caffe's forward_cpu_bias adds the bias onto the product's output; a BLAS that starts a long
    # reduction from it (addmm) rounds otherwise: compare bit for bit on sums of 512 and 4,608 terms
    x, weight, bias = _draw(kernel, (1, 512, 9, 9), (64, 512, kernel, kernel), (64,))
    x, bias = x.contiguous(memory_format=layout), bias * 100  # (large beside the sums: where it joins shows)
    without = gemm_conv2d(x, weight, None, (1, 1), (0, 0))
    assert torch.equal(gemm_conv2d(x, weight, bias, (1, 1), (0, 0)), without + bias.view(1, -1, 1, 1))


def test_both_kernels_compute_the_convolution_in_many_bands(monkeypatch) -> None:
    monkeypatch.setattr(kernels, "BAND_VALUES", 50)  # a band a row
    for seed, (batch, height) in enumerate([(2, 17), (1, 8), (3, 1)]):
        x, weight, bias = _draw(seed, (batch, 4, height, 9), (6, 4, 3, 3), (6,))
        exact = _exact(x, weight, bias, padding=1)
        _close(winograd_f2_conv2d(x, winograd_f2_weights(weight), bias, (1, 1)), exact)
        last = x.contiguous(memory_format=torch.channels_last)
        _close(winograd_f2_conv2d_nhwc(last, winograd_f2_weights(weight), bias, (1, 1)), exact)
        _close(gemm_conv2d(x, weight, bias, (1, 1), (1, 1)), exact)


@pytest.mark.parametrize(
    ("shape", "kernel", "stride"),
    [((3, 17, 20), (3, 3), (1, 1)), ((8, 22, 22), (7, 7), (1, 1)), ((5, 13, 11), (3, 2), (2, 3)),
     ((4, 9, 9), (1, 1), (2, 2)), ((2, 6, 40), (1, 5), (1, 4))],
)  # fmt: skip
def test_im2col_is_unfolds_matrix_for_any_kernel_and_stride_on_a_band_view(shape, kernel, stride) -> None:
    generator = torch.Generator().manual_seed(sum(shape))
    blob = torch.randn(2, shape[0], shape[1] + 5, shape[2], generator=generator)
    for x in (blob[1, :, : shape[1]], blob[0, :, 5:]):  # rows of a larger blob: a view with an offset
        out = ((shape[1] - kernel[0]) // stride[0] + 1, (shape[2] - kernel[1]) // stride[1] + 1)
        expected = F.unfold(x[None].contiguous(), kernel, stride=stride)[0]
        assert torch.equal(kernels.im2col(x, kernel, stride, out), expected)


def test_the_winograd_kernel_transform_is_lavin_and_grays_g_g_gt() -> None:
    """G g G^T written out for one 3x3 kernel (Lavin and Gray 2016, eq. for F(2x2, 3x3))."""
    g = torch.arange(1.0, 10.0).reshape(1, 1, 3, 3)
    u = winograd_f2_weights(g).reshape(4, 4)
    G = torch.tensor([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]])
    torch.testing.assert_close(u, G @ g[0, 0] @ G.T)
    assert u[0, 0] == 1 and u[3, 3] == 9 and u[1, 1] == 45 / 4
