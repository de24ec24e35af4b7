"""FlowNet 2.0's layers (lmb-freiburg/flownet2): ``Correlation`` (FlowNetC's cost volume),
``Resample`` (the deploy nets' final resizing), ``DataAugmentation`` (in a deploy net: the mean
subtraction), ``FlowWarp``, ``Accum`` and ``ChannelNorm``.

The fork has CPU code for FlowWarp, Accum and ChannelNorm only; Correlation, Resample and
DataAugmentation stop on the CPU (``NOT_IMPLEMENTED`` / ``LOG(FATAL)``), so what they compute here
is what the fork's CUDA kernels (``*_layer.cu``) compute. OpenCV dnn reads all six but computes
some otherwise; where it differs, the fork's kernels are followed and the function says so.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...errors import NetError
from ..fillers import CONSTANT_ZERO
from ..gradients import gradient_only
from ..registry import Converted, LayerContext, check_count, check_int, register_layer
from ..tracing import has_values, tracing

# ---------------------------------------------------------------- Correlation


class Correlation(nn.Module):
    """FlowNetC's correlation of two ``N x C x H x W`` maps (correlation_layer.cu): both padded with
    ``pad`` zeros; for each output position ``(y, x)`` (centre ``y * stride_1 + border`` in the
    padded map, ``border = max_displacement + kernel_size // 2``) and each displacement ``(dy, dx)``
    in multiples of ``stride_2`` up to ``max_displacement`` (channel ``(dy index) * grid + (dx
    index)``, ``grid = 2 * (max_displacement // stride_2) + 1``), the mean over the ``kernel_size^2``
    window and the channels of ``a * b`` (``MULTIPLY``) or ``|a - b|`` (``SUBTRACT``), ``b`` read
    ``(dy, dx)`` away. Output ``N x grid^2 x ceil((H + 2 pad - 2 border) / stride_1) x (same for W)``.

    OpenCV dnn computes ``MULTIPLY`` whatever ``correlation_type`` says. The fork's ``SUBTRACT``
    backward reads both maps at the displaced position; the gradient here is that of the forward.
    """

    def __init__(
        self, pad: int, kernel: int, max_displacement: int, stride1: int, stride2: int, subtract: bool
    ) -> None:
        super().__init__()
        self.pad, self.kernel, self.max_displacement = pad, kernel, max_displacement
        self.stride1, self.stride2, self.subtract = stride1, stride2, subtract

    def extra_repr(self) -> str:
        kind = "SUBTRACT" if self.subtract else "MULTIPLY"
        return (
            f"pad={self.pad}, kernel_size={self.kernel}, max_displacement={self.max_displacement}, "
            f"stride_1={self.stride1}, stride_2={self.stride2}, {kind}"
        )

    def forward(self, a: Tensor, b: Tensor) -> Tensor:
        if self.pad:
            a, b = F.pad(a, (self.pad,) * 4), F.pad(b, (self.pad,) * 4)
        d, radius = self.max_displacement, self.max_displacement // self.stride2
        height, width = a.shape[-2], a.shape[-1]
        centre = a[..., d : height - d, d : width - d]
        costs = []
        for i in range(-radius, radius + 1):  # dy: the slower index of the output channel
            for j in range(-radius, radius + 1):  # dx
                dy, dx = i * self.stride2, j * self.stride2
                moved = b[..., d + dy : height - d + dy, d + dx : width - d + dx]
                cost = (centre - moved).abs() if self.subtract else centre * moved
                costs.append(cost.sum(1, keepdim=True))
        # the window mean over kernel x kernel, stepped by stride_1, then over the channels
        return F.avg_pool2d(torch.cat(costs, 1), self.kernel, stride=self.stride1) / a.shape[1]


def correlation_output_size(size: int, pad: int, kernel: int, max_displacement: int, stride1: int) -> int:
    """The fork's ``ceil((size + 2 pad - 2 (max_displacement + kernel // 2)) / stride_1)`` (in float,
    as its ``Reshape``)."""
    border = max_displacement + (kernel - 1) // 2
    return math.ceil(float(np.float32(size + 2 * pad - 2 * border) / np.float32(stride1)))


@register_layer("Correlation", bottoms=2, tops=1)
def correlation(ctx: LayerContext) -> Converted:
    p = ctx.param("correlation_param")
    if "kernel_size" not in p or "max_displacement" not in p:
        raise NetError(f"{ctx.where}: correlation_param needs kernel_size and max_displacement")
    kernel, d = int(p.get("kernel_size")), int(p.get("max_displacement"))
    pad, s1, s2 = int(p.get("pad")), int(p.get("stride_1")), int(p.get("stride_2"))
    if kernel % 2 == 0:
        raise NetError(f"{ctx.where}: kernel_size must be odd (the fork requires it), got {kernel}")
    check_int([s1, s2], "stride_1 and stride_2", ctx.where)  # the fork keeps them in C ints
    check_int([kernel, d + 1, pad + 1], "kernel_size, max_displacement + 1 and pad + 1", ctx.where)
    a, b = ctx.bottom_shape(0), ctx.bottom_shape(1)
    if len(a) != 4 or a != b:
        raise NetError(
            f"{ctx.where}: the two bottoms must be N x C x H x W of one shape, got {list(a)} and {list(b)}"
        )
    h, w = (correlation_output_size(n, pad, kernel, d, s1) for n in a[2:])
    if h < 1 or w < 1:  # the fork's CHECK_GE(top_width_, 1)
        raise NetError(
            f"{ctx.where}: a {a[2]} x {a[3]} map with pad {pad} is too small for max_displacement {d} "
            f"and kernel_size {kernel} (the output would be {h} x {w})"
        )
    subtract = str(p.get("correlation_type")) == "SUBTRACT"
    grid = 2 * (d // s2) + 1
    check_count((a[0], grid * grid, h, w), "the top", ctx.where)

    def shapes(bottoms: list[tuple[int, ...]]) -> tuple[int, ...]:
        sizes = (correlation_output_size(n, pad, kernel, d, s1) for n in bottoms[0][2:])
        return (bottoms[0][0], grid * grid, *sizes)

    return Converted(module=Correlation(pad, kernel, d, s1, s2, subtract), output_shape=shapes)


# ---------------------------------------------------------------- Resample


def _round_half_away(x: Tensor) -> Tensor:
    """C's ``round``: halves go away from zero (``torch.round`` rounds them to even)."""
    return torch.sign(x) * torch.floor(x.abs() + 0.5)


def _resample_positions(out_size: int, factor: np.float32, other: np.float32) -> Tensor:
    """The source coordinate of each output pixel along one axis, as the fork's kernels compute it
    in float: ``out * factor + other / 2 - 0.5``, where ``other`` is the *other* axis's factor (the
    kernels write ``x_out * fx + fy / 2 - 0.5`` and ``y_out * fy + fx / 2 - 0.5``). The product and
    first sum are one fused multiply-add, as nvcc compiles them by default (``--fmad=true``)."""
    fused = np.arange(out_size, dtype=np.float64) * np.float64(factor) + np.float64(other / np.float32(2))
    return torch.from_numpy((fused.astype(np.float32) - np.float32(0.5)).astype(np.float32))


def _bicubic(x: Tensor) -> Tensor:
    """The fork's ``bicubicCoeff`` (Keys, a = -0.5)."""
    x = x.abs()
    near = x * x * (1.5 * x - 2.5) + 1.0
    far = x * (x * (-0.5 * x + 2.5) - 4.0) + 2.0
    return torch.where(x <= 1.0, near, torch.where(x < 2.0, far, torch.zeros_like(x)))


def _triangle(x: Tensor) -> Tensor:
    """The fork's ``triangleCoeff``: ``1 - |x|`` on ``[-1, 1]``."""
    return torch.clamp(1.0 - x.abs(), min=0.0)


def resample_weights(
    in_size: int, out_size: int, factor: np.float32, other: np.float32, cubic: bool, scale: float
) -> Tensor:
    """The ``out_size x in_size`` matrix of one axis of the fork's ``InterpolationKernel``: weight
    ``scale * k(scale * (position - i))`` for source pixel ``i`` (``k`` the cubic or triangle filter;
    ``scale`` ``1 / factor`` when antialiasing, else 1), rows normalised to sum 1 over the pixels
    inside the image (a row with no weight stays 0, as the kernel writes 0). The kernel's window
    always covers the filter's support, and the 2-D weights are products whose in-image set is a
    rectangle, so normalising each axis alone gives the kernel's ``sum / wsum``."""
    position = _resample_positions(out_size, factor, other).double()
    distance = position[:, None] - torch.arange(in_size, dtype=torch.float64)[None, :]
    weights = scale * (_bicubic if cubic else _triangle)(scale * distance)
    total = weights.sum(1, keepdim=True)
    return torch.where(total != 0, weights / torch.where(total != 0, total, 1.0), 0.0)


def nearest_indices(in_h: int, in_w: int, out_h: int, out_w: int) -> Tensor:
    """Where the fork's ``NearestNeighborKernel`` reads each output pixel, as an offset in its
    ``in_h x in_w`` plane (``round(y_in) * in_w + round(x_in)``, which can leave the plane)."""
    fx, fy = np.float32(in_w) / np.float32(out_w), np.float32(in_h) / np.float32(out_h)
    ys = _round_half_away(_resample_positions(out_h, fy, fx)).long()
    xs = _round_half_away(_resample_positions(out_w, fx, fy)).long()
    return ys[:, None] * in_w + xs[None, :]


class Resample(nn.Module):
    """FlowNet 2.0's ``Resample`` (resample_layer.cu) to ``height x width`` (or to the second
    bottom's size): ``NEAREST`` reads pixel ``(round(y_in), round(x_in))`` (C's rounding, no bounds
    check: a column past the row reads the next row, as the kernel's flat index does; sizes that
    send it past the image are refused);
    ``LINEAR`` and ``CUBIC`` weigh the source pixels with the triangle or Keys cubic filter around
    ``(y_in, x_in)``, widened by the factor when the layer shrinks either axis and ``antialias`` is
    set, normalised over the pixels inside the image. ``x_in = x * fx + fy / 2 - 0.5`` with
    ``fx = W_in / W_out`` (the kernels take the *other* axis's factor for the half-pixel offset).

    OpenCV dnn reads a Resample layer as its own Resize (``x_in = x * fx``, no antialiasing, no
    CUBIC): the two agree on NEAREST enlargement by whole factors only. The fork has no backward."""

    def __init__(self, size: tuple[int, int] | None, mode: str, antialias: bool) -> None:
        super().__init__()
        self.size, self.mode, self.antialias = size, mode, antialias

    def extra_repr(self) -> str:
        size = f"size={self.size}, " if self.size else "size of bottom 1, "
        return f"{size}{self.mode}, antialias={self.antialias}"

    def forward(self, x: Tensor, reference: Tensor | None = None) -> Tensor:
        out_h, out_w = (reference.shape[-2], reference.shape[-1]) if reference is not None else self.size
        in_h, in_w = x.shape[-2], x.shape[-1]
        fx, fy = np.float32(in_w) / np.float32(out_w), np.float32(in_h) / np.float32(out_h)
        if self.mode == "NEAREST":
            return self._nearest(x, out_h, out_w)
        shrinks = bool(fx > 1 or fy > 1)
        wide = self.antialias and shrinks
        cubic = self.mode == "CUBIC"
        rows = resample_weights(in_h, out_h, fy, fx, cubic, float(1 / fy) if wide else 1.0)
        cols = resample_weights(in_w, out_w, fx, fy, cubic, float(1 / fx) if wide else 1.0)
        rows, cols = rows.to(x.device, x.dtype), cols.to(x.device, x.dtype)
        return torch.matmul(torch.matmul(rows, x), cols.t())

    def _nearest(self, x: Tensor, out_h: int, out_w: int) -> Tensor:
        n, c, in_h, in_w = x.shape
        flat = nearest_indices(in_h, in_w, out_h, out_w).to(x.device)
        planes = torch.arange(n * c, device=x.device).reshape(-1, 1, 1) * (in_h * in_w)
        if has_values(x) and flat.numel() and int(flat.max()) >= in_h * in_w:
            raise ValueError(f"Resample: {_PAST_THE_IMAGE.format(in_h, in_w, out_h, out_w)}")
        return x.reshape(-1)[planes + flat.clamp(max=in_h * in_w - 1)].reshape(n, c, out_h, out_w)


_PAST_THE_IMAGE = (
    "NEAREST from {} x {} to {} x {} reads outside the image (the fork's kernel rounds x * fx + fy / 2 "
    "- 0.5: with factors more than 2 apart it reads the next image, past the blob for the last); give "
    "sizes with closer factors"
)


@register_layer("Resample", bottoms=(1, 2), tops=1)
def resample(ctx: LayerContext) -> Converted:
    """One bottom: ``resample_param``'s ``height`` x ``width``; two: the second bottom's size."""
    p = ctx.param("resample_param")
    mode = str(p.get("type"))
    if mode not in ("NEAREST", "LINEAR", "CUBIC"):
        raise NetError(f"{ctx.where}: type {mode} is refused by the fork; use NEAREST, LINEAR or CUBIC")
    shape = ctx.bottom_shape(0)
    if len(shape) != 4:
        raise NetError(f"{ctx.where}: the bottom must be N x C x H x W, got {list(shape)}")
    size = None
    if len(ctx.bottoms) == 1:
        size = (int(p.get("height")), int(p.get("width")))
        if min(size) < 1:
            raise NetError(f"{ctx.where}: resample_param needs height and width of at least 1, got {size}")
    out = size if size is not None else ctx.bottom_shape(1)[-2:]
    if len(out) != 2:
        raise NetError(f"{ctx.where}: the size bottom must have a height and width, got {list(out)}")
    check_count((*shape[:2], *out), "the top", ctx.where)
    if mode == "NEAREST" and int(nearest_indices(shape[2], shape[3], *out).max()) >= shape[2] * shape[3]:
        raise NetError(f"{ctx.where}: {_PAST_THE_IMAGE.format(shape[2], shape[3], *out)}")
    module = Resample(size, mode, bool(p.get("antialias")))

    def shapes(bottoms: list[tuple[int, ...]]) -> tuple[int, ...]:
        out = size if size is not None else tuple(bottoms[1][-2:])
        return (*bottoms[0][:2], *out)

    return Converted(module=module, output_shape=shapes)


# ---------------------------------------------------------------- DataAugmentation

#: The ``augmentation_param`` fields that draw random augmentations (each a
#: ``RandomGeneratorParameter``), as data_augmentation_layer.cu tests them.
RANDOM_FIELDS = (
    "mirror", "translate", "rotate", "zoom", "squeeze", "translate_x", "translate_y", "brightness",
    "gamma", "contrast", "color", "fog_size", "fog_amount", "motion_blur_angle", "motion_blur_size",
    "shadow_angle", "shadow_distance", "shadow_strength", "noise", "lmult_pow", "lmult_mult",
    "lmult_add", "sat_pow", "sat_mult", "sat_add", "col_pow", "col_mult", "col_add", "ladd_pow",
    "ladd_mult", "ladd_add", "col_rotate",
)  # fmt: skip


def centre_crop(x: Tensor, height: int, width: int) -> Tensor:
    """The fork's ``SpatialAugmentation`` with the identity coefficients it uses when not
    augmenting: source ``(y + (H - height) / 2, x + (W - width) / 2)``, clamped to
    ``[0, H - 1.05] x [0, W - 1.05]`` (so a crop that reaches the last row or column blends it
    0.95 : 0.05 with the one before), sampled bilinearly."""
    in_h, in_w = x.shape[-2], x.shape[-1]

    def axis(size: int, out: int) -> tuple[Tensor, Tensor, Tensor]:
        offset = np.float32(-0.5 * out) + np.float32(0.5 * size)
        pos = np.arange(out, dtype=np.float32) + offset
        pos = np.maximum(np.float32(0), np.minimum(pos, np.float32(size) - np.float32(1.05)))
        low = np.floor(pos)
        near = torch.from_numpy(low.astype(np.int64)).to(x.device)
        far = torch.clamp(near + 1, max=size - 1)  # weighted 0 where the fork reads past the row
        return near, far, torch.from_numpy(pos - low).to(x.device, x.dtype)

    top, bottom, dy = axis(in_h, height)
    left, right, dx = axis(in_w, width)
    dy, dx = dy.reshape(-1, 1), dx.reshape(1, -1)
    tl = x[..., top[:, None], left[None, :]]
    tr = x[..., top[:, None], right[None, :]]
    bl = x[..., bottom[:, None], left[None, :]]
    br = x[..., bottom[:, None], right[None, :]]
    return (1 - dx) * (1 - dy) * tl + dx * dy * br + (1 - dx) * dy * bl + dx * (1 - dy) * tr


class DataAugmentation(nn.Module):
    """FlowNet 2.0's ``DataAugmentation`` as a deploy net runs it (no augmentation: TEST without
    ``augment_during_test``, or no crop): the centre crop when ``crop_width`` and ``crop_height``
    are set (:func:`centre_crop`), then the mean subtraction.

    With ``recompute_mean`` > 0 the layer keeps an iteration count and a per-pixel and a per-channel
    mean (its three blobs) and updates them on *every* forward pass, in any phase, while the count
    (incremented first) is at most ``recompute_mean``: ``mean = (mean (k - 1) + batch mean) / k``,
    the per-channel mean its spatial mean; it subtracts the per-pixel mean (``mean_per_pixel``) or
    the per-channel one. Loaded as the fork's ``adjust_blobs`` loads them: the count, and the
    per-channel mean as stored (per-pixel mean 0) without ``mean_per_pixel``; with it, the stored
    per-pixel mean (at another size: its per-channel mean everywhere) and its spatial mean. That
    state lives here, not in the blobs, and :meth:`reset` forgets it. Trained nets store a count
    past ``recompute_mean``: the stored means are subtracted. Without ``recompute_mean``, three
    ``mean`` values are subtracted per channel when ``mean_per_pixel`` is false.

    OpenCV dnn recomputes the mean from every input instead (as the fork's first pass would): the
    two agree only for a stored count of 0 and a batch of 1."""

    def __init__(
        self,
        crop: tuple[int, int] | None,
        recompute_mean: int,
        per_pixel: bool,
        mean_values: tuple[float, float, float] | None,
        channels: int,
        stored_mean: tuple[int, ...],
    ) -> None:
        super().__init__()
        self.crop, self.recompute_mean, self.per_pixel = crop, recompute_mean, per_pixel
        self.mean_values = mean_values
        self.iterations = nn.Parameter(torch.empty(1, 1, 1, 1, device="meta"))
        if recompute_mean > 0:
            self.mean = nn.Parameter(torch.empty(stored_mean, device="meta"))
            self.channel_mean = nn.Parameter(torch.empty(1, channels, 1, 1, device="meta"))
        # the fork never backpropagates to its blobs (lr_mult and decay_mult 0)
        self.fixed_mults = {i: (0.0, 0.0) for i in range(3 if recompute_mean > 0 else 1)}
        self._state: tuple[float, Tensor, Tensor] | None = None

    def extra_repr(self) -> str:
        mean = (
            f"recompute_mean={self.recompute_mean}, mean_per_pixel={self.per_pixel}"
            if self.recompute_mean > 0
            else f"mean={self.mean_values}"
        )
        return f"crop={self.crop}, {mean}"

    def reset(self) -> None:
        """Forget the iteration count and means carried from earlier passes (back to the blobs)."""
        self._state = None

    def _loaded(self, y: Tensor) -> tuple[float, Tensor, Tensor]:
        count = float(self.iterations.detach().reshape(-1)[0])
        stored = self.mean.detach().to(y.dtype)
        if not self.per_pixel:
            return count, torch.zeros_like(y[:1]), self.channel_mean.detach().to(y.dtype)
        channel = stored.mean(dim=(2, 3), keepdim=True)
        if tuple(stored.shape[-2:]) == tuple(y.shape[-2:]):
            return count, stored, channel
        return count, channel.expand_as(y[:1]).clone(), channel

    def forward(self, x: Tensor) -> Tensor:
        y = centre_crop(x, *self.crop) if self.crop is not None else x
        if self.recompute_mean <= 0:
            if self.mean_values is None:
                return y
            return y - torch.tensor(self.mean_values, dtype=y.dtype, device=y.device).reshape(1, -1, 1, 1)
        if not has_values(y):  # traced or on meta: the stored means, as a trained net subtracts them
            if not self.per_pixel:
                return y - self.channel_mean.to(y.dtype)
            if tuple(self.mean.shape[-2:]) == tuple(y.shape[-2:]):
                return y - self.mean.to(y.dtype)
            return y - self.mean.to(y.dtype).mean(dim=(2, 3), keepdim=True)
        with torch.no_grad():
            state = self._state
            if state is None or tuple(state[1].shape[-2:]) != tuple(y.shape[-2:]):  # a new size: as loaded
                state = self._loaded(y)
            count, mean, channel = state
            count += 1  # the fork's num_iter, incremented by every forward pass
            if count <= self.recompute_mean:
                batch = y.shape[0]
                mean = mean * (count - 1)
                for n in range(batch):  # caffe_gpu_axpy(1 / num) per image, then scaled by 1 / k
                    mean = mean + float(np.float32(1) / np.float32(batch)) * y[n : n + 1]
                mean = mean * float(np.float32(1) / np.float32(count))
                channel = mean.mean(dim=(2, 3), keepdim=True)
            self._state = (count, mean, channel)
        return y - (mean if self.per_pixel else channel)


@register_layer("DataAugmentation", bottoms=(1, 2), tops=1)
def data_augmentation(ctx: LayerContext) -> Converted:
    """The deploy form: one bottom, no random augmentation."""
    p = ctx.param("augmentation_param")
    if len(ctx.bottoms) > 1:
        raise NetError(
            f"{ctx.where}: a second bottom brings another layer's augmentation coefficients (training "
            "nets); a deploy net has one bottom"
        )
    shape = ctx.bottom_shape(0)
    if len(shape) != 4:
        raise NetError(f"{ctx.where}: the bottom must be N x C x H x W, got {list(shape)}")
    crop = None
    if "crop_width" in p and "crop_height" in p:
        crop = (int(p.get("crop_height")), int(p.get("crop_width")))
        if min(crop) < 1 or crop[0] > shape[2] or crop[1] > shape[3]:
            raise NetError(
                f"{ctx.where}: crop_height x crop_width {crop[0]} x {crop[1]} must fit the "
                f"{shape[2]} x {shape[3]} bottom"
            )
    augments = bool(p.get("augment_during_test")) or ctx.phase == "TRAIN"
    drawn = [name for name in RANDOM_FIELDS if name in p]
    if crop is not None and augments and drawn:
        raise NetError(
            f"{ctx.where}: {drawn[0]} draws random augmentations "
            f"({'TRAIN phase' if ctx.phase == 'TRAIN' else 'augment_during_test'}); convert the TEST "
            "phase with augment_during_test false"
        )
    recompute = int(p.get("recompute_mean"))
    per_pixel = bool(p.get("mean_per_pixel"))
    values = [float(v) for v in p.getall("mean")]
    mean_values = None
    if recompute <= 0 and len(values) == 3 and not per_pixel:
        if shape[1] != 3:
            raise NetError(f"{ctx.where}: three mean values need a 3-channel bottom, got {shape[1]} channels")
        mean_values = (values[0], values[1], values[2])
    channels = shape[1]
    out_h, out_w = crop if crop is not None else shape[2:]
    stored: tuple[int, ...] = (1, channels, out_h, out_w)
    if recompute > 0 and ctx.blob_shapes and len(ctx.blob_shapes) > 1:
        stored = tuple(ctx.blob_shapes[1])
        if len(stored) != 4 or stored[:2] != (1, channels):
            raise NetError(
                f"{ctx.where}: the stored mean must be 1 x {channels} x H x W, got {list(stored)}"
            )
    module = DataAugmentation(crop, recompute, per_pixel, mean_values, channels, stored)
    blobs = [("iterations", (1, 1, 1, 1))]
    if recompute > 0:
        blobs += [("mean", stored), ("channel_mean", (1, channels, 1, 1))]
    return Converted(
        module=module,
        blobs=blobs,
        fillers=[CONSTANT_ZERO] * len(blobs),  # Reshape sets the count to 0; the means start at 0
        output_shape=lambda shapes: (*shapes[0][:2], *(crop if crop is not None else shapes[0][2:])),
    )


# ---------------------------------------------------------------- FlowWarp, Accum, ChannelNorm


def flow_warp(image: Tensor, flow: Tensor, fill_nan: bool = False) -> Tensor:
    """FlowNet 2.0's ``FlowWarp`` (flow_warp_layer.cpp): ``out[y, x] = image`` sampled bilinearly at
    ``(y + flow[1], x + flow[0])`` when that lies in ``[0, H) x [0, W)``, the right and bottom
    neighbours clamped to the last column and row; 0 (or NaN with ``fill_value: NOT_A_NUMBER``)
    elsewhere. Gradients are the fork's: both bottoms get the derivative of this formula (0 where
    the fill is written, where the fork writes no flow gradient at all)."""
    n, c, height, width = image.shape
    fx, fy = flow[:, 0], flow[:, 1]
    ys = torch.arange(height, dtype=flow.dtype, device=flow.device).reshape(1, -1, 1)
    xs = torch.arange(width, dtype=flow.dtype, device=flow.device).reshape(1, 1, -1)
    x2, y2 = xs + fx, ys + fy
    inside = (x2 >= 0) & (y2 >= 0) & (x2 < width) & (y2 < height)
    left = torch.floor(x2).detach().clamp(0, width - 1)
    top = torch.floor(y2).detach().clamp(0, height - 1)
    alpha, beta = (x2 - left).unsqueeze(1), (y2 - top).unsqueeze(1)
    left, top = left.long(), top.long()
    right, bottom = (left + 1).clamp(max=width - 1), (top + 1).clamp(max=height - 1)
    flat = image.reshape(n, c, height * width)

    def at(row: Tensor, col: Tensor) -> Tensor:
        index = (row * width + col).reshape(n, 1, -1).expand(n, c, -1)
        return flat.gather(2, index).reshape(n, c, height, width)

    warped = (
        (1 - alpha) * (1 - beta) * at(top, left)
        + alpha * (1 - beta) * at(top, right)
        + (1 - alpha) * beta * at(bottom, left)
        + alpha * beta * at(bottom, right)
    )
    fill = torch.full((), float("nan") if fill_nan else 0.0, dtype=warped.dtype, device=warped.device)
    return torch.where(inside.unsqueeze(1), warped, fill)


@register_layer("FlowWarp", bottoms=2, tops=1)
def flow_warp_layer(ctx: LayerContext) -> Converted:
    image, flow = ctx.bottom_shape(0), ctx.bottom_shape(1)
    if len(image) != 4 or len(flow) != 4 or flow[1] != 2 or (image[0], *image[2:]) != (flow[0], *flow[2:]):
        raise NetError(
            f"{ctx.where}: the bottoms must be an image N x C x H x W and its flow N x 2 x H x W, got "
            f"{list(image)} and {list(flow)}"
        )
    fill_nan = str(ctx.param("flow_warp_param").get("fill_value")) == "NOT_A_NUMBER"
    return Converted(function=flow_warp, kwargs={"fill_nan": fill_nan}, keeps_shape=True)


def accum_size(shapes: list[tuple[int, ...]], param: dict[str, int], reference: bool) -> tuple[int, int]:
    """Accum's output height and width (accum_layer.cpp's ``Reshape``): the reference's size (the
    last bottom) with ``have_reference``; else the largest bottom height and width, or the size the
    layer asks for (``size_divisible_by``: those rounded up to a multiple; else ``top_height`` x
    ``top_width``) when both of its sides are larger."""
    if reference:
        return shapes[-1][2], shapes[-1][3]
    height, width = max(s[2] for s in shapes), max(s[3] for s in shapes)
    divisor = param.get("size_divisible_by")
    if divisor:
        want = (math.ceil(height / divisor) * divisor, math.ceil(width / divisor) * divisor)
    elif divisor == 0:  # the fork: ceil(h / 0.0) * 0 is NaN, whose int on x86 is INT_MIN: no size asked
        want = (0, 0)
    else:
        want = (param.get("top_height", 0), param.get("top_width", 0))
    return want if want[0] > height and want[1] > width else (height, width)


def accum(*bottoms: Tensor, param: dict[str, int], reference: bool) -> Tensor:
    """FlowNet 2.0's ``Accum``: each bottom (the reference excepted) resized to the output size
    (:func:`accum_size`) by bilinear interpolation with the corners aligned
    (``x_src = x * (W_in - 1) / (W_out - 1)``), concatenated along the channels."""
    height, width = accum_size([tuple(b.shape) for b in bottoms], param, reference)
    parts = bottoms[:-1] if reference else bottoms
    resized = [
        b if tuple(b.shape[-2:]) == (height, width)
        else F.interpolate(b, size=(height, width), mode="bilinear", align_corners=True)
        for b in parts
    ]  # fmt: skip
    return torch.cat(resized, dim=1)


@register_layer("Accum", bottoms=(1, None), tops=1)
def accum_layer(ctx: LayerContext) -> Converted:
    p = ctx.param("accum_param")
    reference = bool(p.get("have_reference"))
    fields = {k: int(p.get(k)) for k in ("top_height", "top_width", "size_divisible_by") if k in p}
    if reference and len(ctx.bottoms) < 2:
        raise NetError(f"{ctx.where}: have_reference needs a second bottom (the last one gives the size)")
    shapes = [ctx.bottom_shape(i) for i in range(len(ctx.bottoms))]
    if any(len(s) != 4 for s in shapes) or len({s[0] for s in shapes}) != 1:
        raise NetError(
            f"{ctx.where}: the bottoms must be N x C x H x W with one N, got {[list(s) for s in shapes]}"
        )
    height, width = accum_size(shapes, fields, reference)
    check_count((shapes[0][0], sum(s[1] for s in shapes), height, width), "the top", ctx.where)
    if height == 1 or width == 1:
        raise NetError(
            f"{ctx.where}: an output of {height} x {width} makes the fork divide 0 by 0 when it "
            "interpolates (its values are undefined); give sizes above 1"
        )
    channels = sum(s[1] for s in (shapes[:-1] if reference else shapes))
    return Converted(
        function=accum,
        kwargs={"param": fields, "reference": reference},
        output_shape=lambda s: (s[0][0], channels, *accum_size(s, fields, reference)),
    )


def channel_norm(x: Tensor) -> Tensor:
    """FlowNet 2.0's ``ChannelNorm``: ``sqrt(sum_c x^2)`` per position, ``N x 1 x H x W``, with the
    fork's gradient ``g x / (norm + 1e-9)`` (0, not NaN, where the norm is 0)."""
    norm = torch.sqrt((x * x).sum(1, keepdim=True))
    if not (torch.is_grad_enabled() and x.requires_grad) or tracing():
        return norm
    slope = (x / (norm + 1e-9)).detach()  # channel_norm_layer.cpp's Backward_cpu
    routed = (x * slope).sum(1, keepdim=True)
    return norm.detach() + gradient_only(routed)


@register_layer("ChannelNorm", bottoms=1, tops=1)
def channel_norm_layer(ctx: LayerContext) -> Converted:
    shape = ctx.bottom_shape(0)
    if len(shape) != 4:
        raise NetError(f"{ctx.where}: the bottom must be N x C x H x W, got {list(shape)}")
    return Converted(function=channel_norm, output_shape=lambda s: (s[0][0], 1, *s[0][2:]))
