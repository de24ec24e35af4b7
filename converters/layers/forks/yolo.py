"""The YOLO forks' ``Upsample``: nearest-neighbour enlargement by an integer ``scale``
(``out[h, w] = in[h // scale, w // scale]``), over the last two axes (``dims_num: 4``, the
default) or the last one (``dims_num: 3``), as brocolli-caffe and the caffe-yolov3 ports compute
it. The type name is SegNet's too: :mod:`.segnet` registers ``Upsample`` and sends one-bottom
layers here."""

from __future__ import annotations

from torch import Tensor

from ..registry import Converted, LayerContext


def nearest_upsample(x: Tensor, scale: int, axes: int = 2) -> Tensor:
    """Each of the last ``axes`` axes repeated ``scale`` times, element by element (exact copies)."""
    for axis in range(x.dim() - axes, x.dim()):
        x = x.unsqueeze(axis + 1)
        shape = list(x.shape)
        shape[axis + 1] = scale
        x = x.expand(shape).flatten(axis, axis + 1)
    return x


def nearest_upsample_layer(ctx: LayerContext) -> Converted:
    """The converter of a one-bottom ``Upsample`` layer (the YOLO forks' semantics)."""
    p = ctx.param("upsample_param")
    segnet_only = [
        k for k in ("scale_h", "scale_w", "pad_out_h", "pad_out_w", "upsample_h", "upsample_w") if k in p
    ]
    if segnet_only:
        raise ValueError(
            f"{ctx.where}: {segnet_only[0]} is SegNet's unpooling field, which needs the pooling mask "
            "as a second bottom"
        )
    scale = int(p.get("scale")) if "scale" in p else 1
    dims = int(p.get("dims_num")) if "dims_num" in p else 4
    if scale < 1:
        raise ValueError(f"{ctx.where}: scale must be at least 1, got {scale}")
    if dims not in (3, 4):
        raise ValueError(f"{ctx.where}: dims_num must be 3 or 4, got {dims}")
    return Converted(function=nearest_upsample, kwargs={"scale": scale, "axes": dims - 2})
