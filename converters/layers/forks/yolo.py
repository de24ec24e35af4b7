"""The YOLO forks' layers: ``Reorg`` (YOLOv2's passthrough, darknet's index arithmetic) and
``Upsample``: nearest-neighbour enlargement by an integer ``scale``
(``out[h, w] = in[h // scale, w // scale]``), over the last two axes (``dims_num: 4``, the
default) or the last one (``dims_num: 3``), as brocolli-caffe and the caffe-yolov3 ports compute
it. The type name is SegNet's too: :mod:`.segnet` registers ``Upsample`` and sends one-bottom
layers here."""

from __future__ import annotations

from torch import Tensor

from ..registry import Converted, LayerContext, register_layer


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


def reorg(x: Tensor, stride: int, reverse: bool = False) -> Tensor:
    """The YOLOv2 ports' ``Reorg`` (darknet's ``reorg_cpu``, called with ``forward = reverse``):
    the bottom's memory read as ``N x C/s^2 x H*s x W*s``, each ``s x s`` cell's pixels sent to
    their own group of channels, the result laid out as ``N x C*s^2 x H/s x W/s``. It is not a
    plain space-to-depth: darknet's index arithmetic is kept, as the trained weights expect.
    ``reverse`` is the inverse map (``N x C/s^2 x H*s x W*s``)."""
    n, c, h, w = x.shape
    s = stride
    if reverse:
        cells = x.reshape(n, s, s, c // (s * s), h, w).permute(0, 3, 4, 1, 5, 2)
        return cells.reshape(n, c // (s * s), h * s, w * s)
    cells = x.reshape(n, c // (s * s), h, s, w, s).permute(0, 3, 5, 1, 2, 4)
    return cells.reshape(n, c * s * s, h // s, w // s)


@register_layer("Reorg", bottoms=1, tops=1)
def reorg_layer(ctx: LayerContext) -> Converted:
    p = ctx.param("reorg_param")
    if "stride" not in p or int(p.get("stride")) < 1:
        raise ValueError(f"{ctx.where}: reorg_param needs a positive stride")
    stride, reverse = int(p.get("stride")), bool(p.get("reverse"))
    shape = ctx.bottom_shape(0)
    if len(shape) != 4:
        raise ValueError(f"{ctx.where}: the bottom must have 4 axes, got {list(shape)}")
    n, c, h, w = shape
    if c % (stride * stride) or (not reverse and (h % stride or w % stride)):
        sizes = "" if reverse else f", height and width by {stride}"
        raise ValueError(
            f"{ctx.where}: a {c} x {h} x {w} bottom does not reorganise with stride {stride} "
            f"(channels must divide by {stride * stride}{sizes})"
        )
    return Converted(function=reorg, kwargs={"stride": stride, "reverse": reverse})
