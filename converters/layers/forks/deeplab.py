"""DeepLab's ``Interp`` (DeepLab v2, PSPNet and their descendants): bilinear resizing with the
fork's corner alignment, sizes from ``zoom_factor`` / ``shrink_factor`` / ``height`` + ``width``
(or a second bottom's size, as PSPNet-style forks allow) and non-positive ``pad_beg``/``pad_end``
cropping of the input first."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from ..registry import Converted, LayerContext, register_layer


def interp_output_size(height: int, width: int, param: dict[str, int]) -> tuple[int, int]:
    """The fork's output size for an input of ``height`` x ``width`` (after ``pad_beg``/``pad_end``);
    ``param`` holds the fields the prototxt sets."""
    shrink, zoom = param.get("shrink_factor"), param.get("zoom_factor")
    if shrink is not None and zoom is None:
        return (height - 1) // shrink + 1, (width - 1) // shrink + 1
    if zoom is not None and shrink is None:
        return height + (height - 1) * (zoom - 1), width + (width - 1) * (zoom - 1)
    if "height" in param and "width" in param:
        return param["height"], param["width"]
    if shrink is not None and zoom is not None:
        h, w = (height - 1) // shrink + 1, (width - 1) // shrink + 1
        return h + (h - 1) * (zoom - 1), w + (w - 1) * (zoom - 1)
    raise ValueError("give zoom_factor, shrink_factor or height and width")


class Interp(nn.Module):
    """Bilinear resizing with corners aligned (source = dest * (in - 1) / (out - 1)), as DeepLab's
    ``caffe_cpu_interp2`` computes it, after cropping ``-pad_beg`` / ``-pad_end`` pixels."""

    def __init__(self, param: dict[str, int], pad_beg: int = 0, pad_end: int = 0) -> None:
        super().__init__()
        self.param = dict(param)
        self.pad_beg, self.pad_end = pad_beg, pad_end

    def extra_repr(self) -> str:
        return ", ".join(
            f"{k}={v}" for k, v in {**self.param, "pad_beg": self.pad_beg, "pad_end": self.pad_end}.items()
        )

    def forward(self, x: Tensor, reference: Tensor | None = None) -> Tensor:
        height, width = x.shape[-2] + self.pad_beg + self.pad_end, x.shape[-1] + self.pad_beg + self.pad_end
        if self.pad_beg or self.pad_end:
            x = x[..., -self.pad_beg : -self.pad_beg + height, -self.pad_beg : -self.pad_beg + width]
        if reference is not None:
            size = (reference.shape[-2], reference.shape[-1])
        else:
            size = interp_output_size(height, width, self.param)
        return F.interpolate(x, size=size, mode="bilinear", align_corners=True)


@register_layer("Interp", bottoms=(1, 2), tops=1)
def interp(ctx: LayerContext) -> Converted:
    p = ctx.param("interp_param")
    fields = {k: int(p.get(k)) for k in ("height", "width", "zoom_factor", "shrink_factor") if k in p}
    for key in ("zoom_factor", "shrink_factor"):
        if key in fields and fields[key] < 1:
            raise ValueError(f"{ctx.where}: {key} must be at least 1, got {fields[key]}")
    pad_beg, pad_end = int(p.get("pad_beg")), int(p.get("pad_end"))
    if pad_beg > 0 or pad_end > 0:
        raise ValueError(f"{ctx.where}: pad_beg and pad_end must not be positive (the fork only crops)")
    if len(ctx.bottoms) not in (1, 2):
        raise ValueError(f"{ctx.where}: takes one bottom (or two: the second gives the size)")
    if len(ctx.bottoms) == 2 and fields:
        # the forks with the two-bottom form refuse this as ambiguous
        raise ValueError(
            f"{ctx.where}: with a second bottom giving the size, drop {', '.join(sorted(fields))} "
            "(the size would be ambiguous)"
        )
    if len(ctx.bottoms) == 1:
        try:
            interp_output_size(8, 8, fields)
        except ValueError as exc:
            raise ValueError(f"{ctx.where}: {exc}") from None
    shape = ctx.bottom_shape(0)
    if len(shape) != 4:
        raise ValueError(f"{ctx.where}: the input must have 4 axes (N, C, H, W), got {list(shape)}")
    cropped = (shape[2] + pad_beg + pad_end, shape[3] + pad_beg + pad_end)
    if min(cropped) < 1:  # Caffe's CHECK_GT(height_in_eff_, 0)
        raise ValueError(
            f"{ctx.where}: pad_beg {pad_beg} and pad_end {pad_end} crop the {shape[2]}x{shape[3]} input to "
            f"{cropped[0]}x{cropped[1]}: nothing is left"
        )
    return Converted(module=Interp(fields, pad_beg, pad_end))
