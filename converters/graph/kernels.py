"""Two exact-arithmetic convolution kernels for float32 CPU inference, besides PyTorch's own: the
calibration of :mod:`.speed` weighs them per layer against the direct kernel, by precision first
and speed second.

- :func:`gemm_conv2d`: the convolution as Caffe computes it, an ``im2col`` followed by one matrix
  product (``caffe/src/caffe/layers/base_conv_layer.cpp``, ``forward_cpu_gemm``), here in bands of
  output rows so the column buffer stays small. Its channel sums are blocked by the BLAS, which
  makes it more precise than a direct kernel's long running sums on layers with a long reduction
  (FCN's ``fc6``: 25,088 terms a sum).
- :func:`winograd_f2_conv2d`: 3x3 stride-1 convolutions as Winograd's minimal filtering F(2x2, 3x3)
  (Lavin and Gray, "Fast Algorithms for Convolutional Neural Networks", CVPR 2016, section 4.1):
  each 4x4 input tile is transformed with the matrix B (entries 0 and +-1), multiplied channel by
  channel with the transformed kernel G g G^T (entries sums of halves, computed here in float64 and
  rounded once) as 16 matrix products over the input channels, and transformed back with A
  (entries 0 and +-1): 16 products for 4 outputs where the direct sum takes 36. Unlike NNPACK's
  F(6x6, 3x3), whose transforms multiply rounding errors by constants up to 10^2, these transforms
  only add and subtract, and the channel sums are the BLAS's blocked ones; on deep layers it is
  measured *more* precise than the direct kernel (the calibration checks it for each layer).

- :func:`phase_conv_transpose2d`: a transposed convolution whose kernel is a whole number of strides
  (FCN's upsampling: 4 at stride 2, 16 at 8, 64 at 32) as one small matrix product per kernel tap
  over every stride phase of the output at once, the taps added in the order Caffe's ``col2im``
  adds them (``caffe/src/caffe/util/im2col.cpp``), the bias last as Caffe's Deconvolution adds it:
  the direct products, each tap's channel sum the BLAS's, no transform.

The first two take a channels-last input (:mod:`.layout`) where they can keep it so:
:func:`winograd_f2_conv2d_nhwc` runs the transforms along each tile's channels and gives a
channels-last output, and a 1x1 layer's ``gemm`` multiplies pixels x channels by the weights; the
sums are the same.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ..layers.tracing import is_channels_last
from .layout import contiguous

__all__ = [
    "gemm_conv2d",
    "phase_conv_transpose2d",
    "phase_taps",
    "winograd_f2_conv2d",
    "winograd_f2_conv2d_nhwc",
    "winograd_f2_weights",
]

#: Values (float32) a band's column buffer or Winograd tiles may hold: 2^21 floats, 8 MB, a slice
#: of the last-level cache that keeps each band's products fed from cache on both machines met.
BAND_VALUES = 1 << 21

# Winograd F(2x2, 3x3) kernel transform G (Lavin and Gray 2016, section 4.1), in float64.
_G = ((1.0, 0.0, 0.0), (0.5, 0.5, 0.5), (0.5, -0.5, 0.5), (0.0, 0.0, 1.0))


def _rows_per_band(values_per_row: int, rows: int, limit: int = BAND_VALUES) -> int:
    return max(1, min(rows, limit // max(1, values_per_row)))


def gemm_conv2d(
    x: Tensor, weight: Tensor, bias: Tensor | None, stride: tuple[int, int], padding: tuple[int, int]
) -> Tensor:
    """``F.conv2d(x, weight, bias, stride, padding)`` (dilation 1, one group) as im2col and one
    matrix product per band of output rows."""
    batch, channels = x.shape[:2]
    out_channels, _, kernel_h, kernel_w = weight.shape
    (stride_h, stride_w), (pad_h, pad_w) = stride, padding
    if not (kernel_h == kernel_w == 1 and stride == (1, 1) and padding == (0, 0)):
        x = contiguous(x)  # (a 1x1 layer takes a channels-last input as it is)
    if pad_h or pad_w:
        x = F.pad(x, (pad_w, pad_w, pad_h, pad_h))
    height, width = x.shape[-2:]
    out_h, out_w = (height - kernel_h) // stride_h + 1, (width - kernel_w) // stride_w + 1
    matrix = weight.reshape(out_channels, -1)
    out = x.new_empty(batch, out_channels, out_h, out_w)
    if kernel_h == kernel_w == 1 and stride_h == stride_w == 1:  # no im2col: the input is the matrix
        if is_channels_last(x):  # pixels x channels: the output channels-last too, no reorder
            out = torch.empty(out.shape, dtype=x.dtype, memory_format=torch.channels_last)
            pixels, result = x.permute(0, 2, 3, 1), out.permute(0, 2, 3, 1)
            for n in range(batch):
                _product_rows(pixels[n].reshape(-1, channels), matrix, bias, result[n].view(-1, out_channels))
            return out
        for n in range(batch):
            _product(matrix, x[n].reshape(channels, -1), bias, out[n].view(out_channels, -1))
        return out
    # each band reads the whole weight matrix again: bands no smaller than it (FCN's fc6: 400 MB, one band)
    band = _rows_per_band(matrix.shape[1] * out_w, out_h, max(BAND_VALUES, matrix.numel()))
    for n in range(batch):
        for top in range(0, out_h, band):
            rows = min(band, out_h - top)
            window = x[n, :, top * stride_h : (top + rows - 1) * stride_h + kernel_h]
            columns = im2col(window, (kernel_h, kernel_w), (stride_h, stride_w), (rows, out_w))
            _product(matrix, columns, bias, out[n, :, top : top + rows].view(out_channels, -1))
    return out


def im2col(x: Tensor, kernel: tuple[int, int], stride: tuple[int, int], out: tuple[int, int]) -> Tensor:
    """``F.unfold(x[None], kernel, stride=stride)[0]`` of a (channels, rows, columns) ``x`` with
    ``out`` output rows and columns: the same matrix (channel, kernel row, kernel column) x (output
    pixels), made as one strided copy (3-5x faster than ``unfold``'s loop on FCN's fc6 input)."""
    channels = x.shape[0]
    step_c, step_h, step_w = x.stride()
    taps = x.as_strided(
        (channels, *kernel, *out), (step_c, step_h, step_w, step_h * stride[0], step_w * stride[1])
    )
    return taps.reshape(channels * kernel[0] * kernel[1], out[0] * out[1])


def _product_rows(rows: Tensor, matrix: Tensor, bias: Tensor | None, out: Tensor) -> None:
    """``out = rows @ matrix.T (+ bias)``: each row a pixel's channels; the bias added to the finished
    sums (:func:`_product`)."""
    torch.mm(rows, matrix.t(), out=out)
    if bias is not None:
        out.add_(bias)


def _product(matrix: Tensor, columns: Tensor, bias: Tensor | None, out: Tensor) -> None:
    """``out = matrix @ columns (+ bias per row)``, written in place where ``out``'s rows are runs the
    BLAS can address (a band of a blob's rows: no product made apart and copied in). The bias is
    added to the finished sums, as Caffe adds it (``forward_cpu_bias``: a second product, onto the
    first's output), not as ``addmm`` does (its BLAS starts the sums from it: other roundings on a
    long reduction such as ``fc6``'s; and a copy of it into ``out`` first)."""
    if out.stride(-1) == 1 and out.stride(0) >= out.shape[1]:
        torch.mm(matrix, columns, out=out)
    else:
        out.copy_(torch.mm(matrix, columns))
    if bias is not None:
        out.add_(bias[:, None])


def winograd_f2_weights(weight: Tensor) -> Tensor:
    """The kernel transform G g G^T of 3x3 ``weight`` (K, C, 3, 3), in float64 rounded once to float32,
    as 16 matrices (16, K, C)."""
    g = torch.tensor(_G, dtype=torch.float64)
    out_channels, channels = weight.shape[:2]
    out = torch.empty(16, out_channels, channels, dtype=weight.dtype)
    step = max(1, (1 << 22) // max(1, channels * 9))  # float64 work in slices of output channels
    for k in range(0, out_channels, step):
        part = weight[k : k + step].double()
        transformed = torch.einsum("ai,kcij,bj->abkc", g, part, g)
        out[:, k : k + step] = transformed.reshape(16, -1, channels)
    return out


def _tiling(x: Tensor, padding: tuple[int, int]) -> tuple[int, int, tuple[int, int, int, int]]:
    """A 3x3 stride-1 layer's output rows and columns, and the padding (``F.pad``'s order: left,
    right, top, bottom) of ``x``: the layer's, and zeros below and to the right that complete the
    last 2x2 tiles (their outputs are dropped)."""
    pad_h, pad_w = padding
    out_h, out_w = x.shape[-2] + 2 * pad_h - 2, x.shape[-1] + 2 * pad_w - 2
    extra_h, extra_w = out_h % 2, out_w % 2
    return out_h, out_w, (pad_w, pad_w + extra_w, pad_h, pad_h + extra_h)


def winograd_f2_conv2d(
    x: Tensor, transformed: Tensor, bias: Tensor | None, padding: tuple[int, int]
) -> Tensor:
    """``F.conv2d(x, weight, bias, padding=padding)`` for a 3x3 ``weight`` given as
    ``winograd_f2_weights(weight)`` (stride 1, dilation 1, one group), by Winograd F(2x2, 3x3)."""
    batch, channels = x.shape[:2]
    out_channels = transformed.shape[1]
    out_h, out_w, widths = _tiling(x, padding)
    if out_h <= 0 or out_w <= 0:
        return x.new_empty(batch, out_channels, max(out_h, 0), max(out_w, 0))
    tiles_h, tiles_w = (out_h + 1) // 2, (out_w + 1) // 2
    x = F.pad(x, widths)
    out = x.new_empty(batch, out_channels, tiles_h, 2, tiles_w, 2)
    band = _rows_per_band(16 * max(channels, out_channels) * tiles_w, tiles_h)
    rows = x.new_empty(4, channels, band, 2 * tiles_w + 2)
    tiles = x.new_empty(4, 4, channels, band, tiles_w)
    products = x.new_empty(16, out_channels, band * tiles_w)
    half = x.new_empty(4, out_channels, band, tiles_w, 2)
    scratch = x.new_empty(4, out_channels, band, tiles_w)
    for n in range(batch):
        for top in range(0, tiles_h, band):
            count = min(band, tiles_h - top)
            window = x[n, :, 2 * top : 2 * (top + count) + 2]
            _input_transform(window, rows[:, :, :count], tiles[..., :count, :])
            m = products[:, :, : count * tiles_w]
            torch.bmm(transformed, tiles[..., :count, :].reshape(16, channels, count * tiles_w), out=m)
            _output_transform(
                m.view(4, 4, out_channels, count, tiles_w), bias, half[:, :, :count], scratch[:, :, :count],
                out[n, :, top : top + count],
            )  # fmt: skip
    return out.view(batch, out_channels, 2 * tiles_h, 2 * tiles_w)[..., :out_h, :out_w].contiguous()


def winograd_f2_conv2d_nhwc(
    x: Tensor, transformed: Tensor, bias: Tensor | None, padding: tuple[int, int]
) -> Tensor:
    """:func:`winograd_f2_conv2d` of a channels-last ``x``, channels-last out: each tile's channels
    side by side, so that the transforms run along them and the products are pixels x channels
    times the transformed weights (``transformed.transpose(1, 2)``: the same sums)."""
    batch, channels = x.shape[:2]
    out_channels = transformed.shape[1]
    out_h, out_w, widths = _tiling(x, padding)
    if out_h <= 0 or out_w <= 0:
        return x.new_empty(batch, out_channels, max(out_h, 0), max(out_w, 0))
    tiles_h, tiles_w = (out_h + 1) // 2, (out_w + 1) // 2
    pixels = F.pad(x.permute(0, 2, 3, 1), (0, 0, *widths))  # (N, H, W, C)
    weights = transformed.transpose(1, 2)  # (16, C, K)
    out = torch.empty(batch, tiles_h, 2, tiles_w, 2, out_channels, dtype=x.dtype)
    band = _rows_per_band(16 * max(channels, out_channels) * tiles_w, tiles_h)
    rows = x.new_empty(4, band, 2 * tiles_w + 2, channels)
    tiles = x.new_empty(4, 4, band, tiles_w, channels)
    products = x.new_empty(16, band * tiles_w, out_channels)
    half = x.new_empty(4, band, tiles_w, 2, out_channels)
    scratch = x.new_empty(4, band, tiles_w, out_channels)
    for n in range(batch):
        for top in range(0, tiles_h, band):
            count = min(band, tiles_h - top)
            window = pixels[n, 2 * top : 2 * (top + count) + 2]
            _pairs([window[i : i + 2 * count : 2] for i in range(4)], rows[:, :count])
            _pairs(
                [rows[:, :count, i : i + 2 * tiles_w : 2] for i in range(4)],
                tiles[:, :, :count].transpose(0, 1),
            )
            m = products[:, : count * tiles_w]
            torch.bmm(tiles[:, :, :count].reshape(16, count * tiles_w, channels), weights, out=m)
            _output_transform_nhwc(
                m.view(4, 4, count, tiles_w, out_channels), bias, half[:, :count], scratch[:, :count],
                out[n, top : top + count],
            )  # fmt: skip
    full = out.view(batch, 2 * tiles_h, 2 * tiles_w, out_channels)
    if (2 * tiles_h, 2 * tiles_w) != (out_h, out_w):
        full = full[:, :out_h, :out_w].contiguous()
    return full.permute(0, 3, 1, 2)


def _output_transform_nhwc(
    m: Tensor, bias: Tensor | None, half: Tensor, scratch: Tensor, out: Tensor
) -> None:
    """:func:`_output_transform` with the channels last: ``m`` (4, 4, count, tiles_w, K) into ``out``
    (count, 2, tiles_w, 2, K)."""
    torch.add(m[:, 1], m[:, 2], out=scratch)
    torch.add(scratch, m[:, 0], out=half[..., 0, :])
    torch.sub(m[:, 1], m[:, 2], out=scratch)
    torch.sub(scratch, m[:, 3], out=half[..., 1, :])
    if bias is not None:
        half[1] += bias
    torch.add(half[1], half[2], out=out[:, 0])
    out[:, 0] += half[0]
    torch.sub(half[1], half[2], out=out[:, 1])
    out[:, 1] -= half[3]


def _pairs(d: list[Tensor], out: Tensor) -> None:
    """B^T's four rows applied along the axis that lists ``d``: d0 - d2, d1 + d2, d2 - d1, d1 - d3."""
    torch.sub(d[0], d[2], out=out[0])
    torch.add(d[1], d[2], out=out[1])
    torch.sub(d[2], d[1], out=out[2])
    torch.sub(d[1], d[3], out=out[3])


def _input_transform(window: Tensor, rows: Tensor, tiles: Tensor) -> None:
    """B^T d B for every 4x4 tile (stride 2) of ``window`` (C, 2 * count + 2, 2 * tiles_w + 2)."""
    count, tiles_w = tiles.shape[-2:]
    _pairs([window[:, i : i + 2 * count : 2] for i in range(4)], rows)
    _pairs([rows[..., i : i + 2 * tiles_w : 2] for i in range(4)], tiles.transpose(0, 1))


def _output_transform(m: Tensor, bias: Tensor | None, half: Tensor, scratch: Tensor, out: Tensor) -> None:
    """A^T m A (A^T's rows: m0 + m1 + m2, m1 - m2 - m3) plus ``bias`` into ``out`` (K, count, 2,
    tiles_w, 2). The bias joins the second row of the column transform, which both output rows add."""
    torch.add(m[:, 1], m[:, 2], out=scratch)
    torch.add(scratch, m[:, 0], out=half[..., 0])
    torch.sub(m[:, 1], m[:, 2], out=scratch)
    torch.sub(scratch, m[:, 3], out=half[..., 1])
    if bias is not None:
        half[1] += bias.view(-1, 1, 1, 1)
    torch.add(half[1], half[2], out=out[:, :, 0])
    out[:, :, 0] += half[0]
    torch.sub(half[1], half[2], out=out[:, :, 1])
    out[:, :, 1] -= half[3]


def phase_taps(weight: Tensor, stride: tuple[int, int]) -> Tensor:
    """A transposed convolution's weights (``in x out x kh x kw``, one group, each kernel side a
    whole number ``m`` of its stride ``s``) as :func:`phase_conv_transpose2d` reads them: per kernel
    tap of the ``m_h x m_w`` an input pixel reaches in each phase, an ``(out * s_h * s_w) x in``
    matrix, the taps in the order the products are added (Caffe's: kernel rows then columns
    ascending)."""
    channels, outputs, kernel_h, kernel_w = weight.shape
    (s_h, s_w) = stride
    m_h, m_w = kernel_h // s_h, kernel_w // s_w
    # kernel row a + i * s_h, column b + j * s_w: phase (a, b), tap (i, j)
    taps = weight.detach().reshape(channels, outputs, m_h, s_h, m_w, s_w).permute(2, 4, 1, 3, 5, 0)
    return taps.reshape(m_h * m_w, outputs * s_h * s_w, channels).contiguous()


def phase_conv_transpose2d(
    x: Tensor, taps: Tensor, bias: Tensor | None, kernel: tuple[int, int], stride: tuple[int, int],
    padding: tuple[int, int],
) -> Tensor:  # fmt: skip
    """``F.conv_transpose2d(x, weight, bias, stride, padding)`` (float32 CPU, one group, no output
    padding) from :func:`phase_taps` of ``weight``, for kernels a whole number of strides long.

    The output's pixel ``(q * s + a)`` (along each axis) takes, from tap ``i``, input pixel
    ``q - i`` through kernel row ``a + i * s``: per tap, one product of its matrix with the input
    shifted by ``i``, summed into every phase at once; then the phases are interleaved (and the
    bias added) in one pass. Returns a view of the interleaved blob where ``padding`` crops it."""
    batch, channels, height, width = x.shape
    (s_h, s_w), (k_h, k_w) = stride, kernel
    m_h, m_w = k_h // s_h, k_w // s_w
    rows, cols = height + m_h - 1, width + m_w - 1  # each phase's length
    outputs = taps.shape[1] // (s_h * s_w)
    # the input pixel q - i for every q (zeros outside): columns (channel, i, j) of every q
    shifted = F.unfold(x.contiguous(), (m_h, m_w), padding=(m_h - 1, m_w - 1))
    shifted = shifted.view(batch, channels, m_h, m_w, rows * cols)
    acc = torch.empty(batch, outputs * s_h * s_w, rows * cols, dtype=x.dtype, device=x.device)
    for image in range(batch):
        first = True
        for i in range(m_h):  # tap i reads the unfolded window's row m_h - 1 - i
            for j in range(m_w):
                tap, window = taps[i * m_w + j], shifted[image, :, m_h - 1 - i, m_w - 1 - j]
                if first:
                    torch.mm(tap, window, out=acc[image])
                    first = False
                else:
                    acc[image].addmm_(tap, window)
    phases = acc.view(batch, outputs, s_h, s_w, rows, cols).permute(0, 1, 4, 2, 5, 3)
    out = torch.empty(batch, outputs, rows * s_h, cols * s_w, dtype=x.dtype, device=x.device)
    spread = out.view(batch, outputs, rows, s_h, cols, s_w)
    if bias is None:
        spread.copy_(phases)
    else:
        torch.add(phases, bias.view(1, -1, 1, 1, 1, 1), out=spread)
    (p_h, p_w) = padding
    if p_h or p_w:
        out = out[:, :, p_h : rows * s_h - p_h, p_w : cols * s_w - p_w]
    return out
