"""Training and scoring layers kept when a graph is built with losses: SoftmaxWithLoss (Caffe's
normalizations) and Accuracy (Caffe's tie ranking, per-class top)."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import NetError
from .gradients import gradient_only
from .reduction import caffe_partial_sort
from .registry import Converted, LayerContext, canonical_axis, register_layer
from .tracing import has_values


def check_label_values(layer: str, label: Tensor, classes: int, ignore_label: int | None) -> None:
    """One-line :class:`NetError` for a label that is not a class index (outside ``[0, classes)``,
    NaN or infinite) and not the ignore label: Caffe reads past its scores there (its check is a
    DCHECK, compiled out of release builds)."""
    if not has_values(label) or not label.numel():
        return
    values = label.detach().reshape(-1)
    finite = torch.isfinite(values)
    index = values.to(torch.int64)
    bad = ~finite | (index < 0) | (index >= classes)
    if ignore_label is not None:
        bad &= ~(finite & (index == ignore_label))
    if bool(bad.any()):
        position = int(torch.nonzero(bad)[0])
        ignored = f" and not the ignore_label {ignore_label}" if ignore_label is not None else ""
        raise NetError(
            f"{layer}: label {float(values[position]):g} (value {position} of the label blob) is not one of "
            f"the {classes} classes (0 to {classes - 1}){ignored}"
        )


def softmax_with_loss(
    score: Tensor, label: Tensor, axis: int, ignore_label: int | None, normalization: str
) -> Tensor:
    """Caffe's SoftmaxWithLoss value (a 0-D tensor), with its normalization modes."""
    axis = axis + score.dim() if axis < 0 else axis
    check_label_values("SoftmaxWithLoss", label, score.shape[axis], ignore_label)
    log_prob = F.log_softmax(score, dim=axis)
    # Caffe clamps the value at log(FLT_MIN) but its gradient stays softmax - onehot: straight through
    floor = math.log(torch.finfo(torch.float32).tiny)
    log_prob = torch.where(log_prob < floor, log_prob - log_prob.detach() + floor, log_prob)
    moved = log_prob.movedim(axis, -1).reshape(-1, score.shape[axis])
    target = label.reshape(-1).long()
    valid = torch.ones_like(target, dtype=torch.bool) if ignore_label is None else target != ignore_label
    safe = torch.where(valid, target, torch.zeros_like(target))
    picked = moved.gather(1, safe.unsqueeze(1)).squeeze(1)
    total = caffe_running_sum(-(picked * valid.to(picked.dtype)), valid)
    outer = math.prod(score.shape[:axis])
    inner = math.prod(score.shape[axis + 1 :])
    if normalization == "FULL":
        normalizer = torch.tensor(float(outer * inner), device=score.device)
    elif normalization == "VALID":
        normalizer = (
            valid.sum().to(score.dtype)
            if ignore_label is not None
            else torch.tensor(float(outer * inner), device=score.device)
        )
    elif normalization == "BATCH_SIZE":
        normalizer = torch.tensor(float(outer), device=score.device)
    elif normalization == "NONE":
        normalizer = torch.tensor(1.0, device=score.device)
    else:
        raise ValueError(f"unknown loss normalization {normalization}")
    return total / torch.clamp(normalizer.to(score.dtype), min=1.0)


def caffe_running_sum(terms: Tensor, keep: Tensor | None = None) -> Tensor:
    """``terms.sum()`` (over the ``keep`` ones), whose value, for float32 CPU tensors, is the running
    float32 sum Caffe's loss loops accumulate, term after term in blob order (``loss -= ...`` in the
    ``Forward_cpu`` of SoftmaxWithLoss, SigmoidCrossEntropyLoss, MultinomialLogisticLoss,
    InfogainLoss and ContrastiveLoss): a pairwise sum drifts from it by about sqrt(n) roundings
    (1e-5 of the loss over a 500 x 500 label map). The gradient is the sum's."""
    total = terms.sum()
    if terms.dtype != torch.float32 or terms.device.type != "cpu" or not has_values(terms):
        return total
    values = terms.detach()
    if keep is not None:
        values = values[keep]
    running = np.cumsum(values.numpy(), dtype=np.float32)[-1] if values.numel() else np.float32(0)
    # (total + (running - total)) is running exactly: the two are within a factor 2 (Sterbenz)
    return total + (torch.tensor(running) - total).detach()


def check_labels(ctx: LayerContext, axis: int) -> int:
    """Caffe's ``Reshape`` check of a loss or accuracy layer: one label per prediction (the score's
    count without the class axis), unless a shape was guessed; returns the number of classes."""
    score, label = ctx.bottom_shape(0), ctx.bottom_shape(1)
    axis = canonical_axis(axis, len(score), ctx.where)
    predictions = math.prod(score[:axis]) * math.prod(score[axis + 1 :])
    if math.prod(label) != predictions and not ctx.guessed:
        raise NetError(
            f"{ctx.where}: '{ctx.bottoms[1]}' {list(label)} holds {math.prod(label)} labels for the "
            f"{predictions} predictions of '{ctx.bottoms[0]}' {list(score)} (classes on axis {axis})"
        )
    return score[axis]


@register_layer("SoftmaxWithLoss", bottoms=2, tops=(1, 2))
def softmax_with_loss_layer(ctx: LayerContext) -> Converted:
    loss = ctx.param("loss_param")
    if "normalization" in loss or "normalize" not in loss:
        normalization = str(loss.get("normalization"))
    else:
        normalization = "VALID" if bool(loss.get("normalize")) else "BATCH_SIZE"
    ignore = int(loss.get("ignore_label")) if "ignore_label" in loss else None
    axis = int(ctx.param("softmax_param").get("axis"))
    check_labels(ctx, axis)
    return Converted(
        function=softmax_with_loss,
        kwargs={"axis": axis, "ignore_label": ignore, "normalization": normalization},
        role="loss",
        output_shape=lambda shapes: (),
    )


def accuracy(
    score: Tensor, label: Tensor, axis: int, top_k: int, ignore_label: int | None, per_class: bool = False
) -> Tensor | tuple[Tensor, Tensor]:
    """Caffe's Accuracy: the share of non-ignored positions whose label is among the ``top_k``
    scores (ties ranked by class index, higher first; over a NaN as Caffe's sort leaves them; NaN
    when every label is ignored), and with ``per_class`` also each class's accuracy (0 for classes
    that do not occur)."""
    axis = axis + score.dim() if axis < 0 else axis
    classes = score.shape[axis]
    check_label_values("Accuracy", label, classes, ignore_label)
    moved = score.movedim(axis, -1).reshape(-1, classes)
    target = label.reshape(-1).long()
    valid = torch.ones_like(target, dtype=torch.bool) if ignore_label is None else target != ignore_label
    safe = torch.where(valid, target, torch.zeros_like(target))
    true_score = moved.gather(1, safe.unsqueeze(1))
    index = torch.arange(classes, device=score.device).unsqueeze(0)
    ahead = (moved > true_score) | ((moved == true_score) & (index > safe.unsqueeze(1)))
    correct = (ahead.sum(dim=1) < top_k) & valid
    unordered = moved.isnan().any(dim=1) & valid if has_values(moved) else None
    if unordered is not None and bool(unordered.any()):  # (pairs with a NaN: Caffe's sort decides)
        correct = correct.clone()
        for row in unordered.nonzero().flatten().tolist():
            ranked = caffe_partial_sort(moved[row].tolist(), min(top_k, classes))
            correct[row] = int(target[row]) in [index for _, index in ranked]
    overall = correct.sum().to(score.dtype) / valid.sum().to(score.dtype)
    if not per_class:
        return overall
    seen = torch.bincount(safe[valid], minlength=classes).to(score.dtype)
    hits = torch.bincount(safe[correct], minlength=classes).to(score.dtype)
    return overall, torch.where(seen > 0, hits / seen.clamp(min=1), torch.zeros_like(seen))


@register_layer("Accuracy", bottoms=2, tops=(1, 2))
def accuracy_layer(ctx: LayerContext) -> Converted:
    p = ctx.param("accuracy_param")
    ignore = int(p.get("ignore_label")) if "ignore_label" in p else None
    axis = int(p.get("axis"))
    n_classes = check_labels(ctx, axis)
    if int(p.get("top_k")) > n_classes:
        raise NetError(f"{ctx.where}: top_k {int(p.get('top_k'))} exceeds the {n_classes} classes")
    per_class = len(ctx.tops) > 1
    kwargs = {"axis": axis, "top_k": int(p.get("top_k")), "ignore_label": ignore, "per_class": per_class}
    if per_class:
        classes = lambda shapes: [(), (shapes[0][canonical_axis(axis, len(shapes[0]))],)]  # noqa: E731
        return Converted(function=accuracy, kwargs=kwargs, role="loss", outputs=2, output_shape=classes)
    return Converted(function=accuracy, kwargs=kwargs, role="loss", output_shape=lambda shapes: ())


# ---- BVLC's other losses: each a 0-D loss whose autograd gradient is Caffe's Backward_cpu


def _normalization(ctx: LayerContext, default: str) -> str:
    """``loss_param``'s normalization, the legacy ``normalize`` read as Caffe reads it."""
    loss = ctx.param("loss_param")
    if "normalization" in loss or "normalize" not in loss:
        return str(loss.get("normalization")) if "normalization" in loss else default
    return "VALID" if bool(loss.get("normalize")) else "BATCH_SIZE"


def _same_count(ctx: LayerContext, a: int, b: int) -> None:
    shapes = ctx.bottom_shapes
    if shapes[a] is not None and shapes[b] is not None and math.prod(shapes[a]) != math.prod(shapes[b]):
        raise NetError(
            f"{ctx.where}: '{ctx.bottoms[a]}' {list(shapes[a])} and '{ctx.bottoms[b]}' {list(shapes[b])} "
            "must hold as many values"
        )


def euclidean_loss(a: Tensor, b: Tensor) -> Tensor:
    """Caffe's EuclideanLoss: ``sum((a - b)^2) / (2 N)``, N the first axis."""
    return ((a - b.reshape(a.shape)) ** 2).sum() / (2 * a.shape[0])


@register_layer("EuclideanLoss", bottoms=2, tops=1)
def euclidean_loss_layer(ctx: LayerContext) -> Converted:
    ctx.legacy_bottoms(0)
    _same_count(ctx, 0, 1)
    return Converted(function=euclidean_loss, role="loss", output_shape=lambda shapes: ())


def sigmoid_cross_entropy_loss(
    score: Tensor, target: Tensor, normalization: str, ignore_label: int | None
) -> Tensor:
    """Caffe's SigmoidCrossEntropyLoss: the cross-entropy of ``sigmoid(score)`` against ``target``
    in its overflow-safe form, summed (ignored targets left out) and normalized as ``loss_param``
    says (BATCH_SIZE: the first axis)."""
    target = target.reshape(score.shape).detach()  # Caffe never backpropagates to the targets
    positive = (score >= 0).to(score.dtype)
    terms = score * (target - positive) - torch.log1p(torch.exp(score - 2 * score * positive))
    # Caffe compares int(target), truncated, with the ignore label
    ignore = target.to(torch.int64) == ignore_label if ignore_label is not None else None
    valid = torch.ones_like(score, dtype=torch.bool) if ignore is None else ~ignore
    total = caffe_running_sum(-(terms * valid.to(score.dtype)), valid)
    count = {"FULL": score.numel(), "BATCH_SIZE": score.shape[0], "NONE": 1}
    if normalization == "VALID":
        normalizer = valid.sum().to(score.dtype)
    else:
        normalizer = torch.tensor(float(count[normalization]), device=score.device)
    return total / normalizer.clamp(min=1.0)


@register_layer("SigmoidCrossEntropyLoss", bottoms=2, tops=1, variants=("bvlc-master", "caffe-1.0"))
def sigmoid_cross_entropy_loss_layer(ctx: LayerContext) -> Converted:
    _same_count(ctx, 0, 1)
    loss = ctx.param("loss_param")
    if ctx.variant == "caffe-1.0":  # Caffe 1.0 divides by N and reads neither field
        ctx.legacy_bottoms(0)  # (its N is bottom 0's num())
        kwargs: dict[str, object] = {"normalization": "BATCH_SIZE", "ignore_label": None}
    else:
        ignore = int(loss.get("ignore_label")) if "ignore_label" in loss else None
        kwargs = {"normalization": _normalization(ctx, "BATCH_SIZE"), "ignore_label": ignore}
    return Converted(
        function=sigmoid_cross_entropy_loss, kwargs=kwargs, role="loss", output_shape=lambda s: ()
    )


def hinge_loss(score: Tensor, label: Tensor, squared: bool) -> Tensor:
    """Caffe's HingeLoss: ``max(0, 1 -/+ score)`` (minus at the label's class), summed (L1) or
    squared and summed (L2), over the first axis's count."""
    scores = score.reshape(score.shape[0], -1)
    check_label_values("HingeLoss", label, scores.shape[1], None)
    target = label.reshape(-1).long()
    sign = torch.ones_like(scores).scatter(1, target.unsqueeze(1), -1.0)
    margins = torch.clamp(1 + sign * scores, min=0)
    return (margins**2 if squared else margins).sum() / score.shape[0]


@register_layer("HingeLoss", bottoms=2, tops=1)
def hinge_loss_layer(ctx: LayerContext) -> Converted:
    ctx.legacy_bottoms(0)
    squared = str(ctx.param("hinge_loss_param").get("norm")) == "L2"
    kwargs = {"squared": squared}
    return Converted(function=hinge_loss, kwargs=kwargs, role="loss", output_shape=lambda s: ())


#: Caffe's ``kLOG_THRESHOLD``: probabilities are clamped here before their log.
LOG_THRESHOLD = 1e-20


def multinomial_logistic_loss(prob: Tensor, label: Tensor) -> Tensor:
    """Caffe's MultinomialLogisticLoss: ``-sum(log(max(prob[label], 1e-20))) / N``."""
    probs = prob.reshape(prob.shape[0], -1)
    check_label_values("MultinomialLogisticLoss", label, probs.shape[1], None)
    picked = probs.gather(1, label.reshape(-1, 1).long()).squeeze(1)
    return caffe_running_sum(-torch.log(picked.clamp(min=LOG_THRESHOLD))) / prob.shape[0]


@register_layer("MultinomialLogisticLoss", bottoms=2, tops=1)
def multinomial_logistic_loss_layer(ctx: LayerContext) -> Converted:
    ctx.legacy_bottoms()
    return Converted(function=multinomial_logistic_loss, role="loss", output_shape=lambda s: ())


def contrastive_loss(a: Tensor, b: Tensor, similar: Tensor, margin: float, legacy: bool) -> Tensor:
    """Caffe's ContrastiveLoss over pairs: the squared distance for similar pairs; for the others
    ``max(margin - d^2, 0)`` (legacy) or ``max(margin - d, 0)^2``, halved, over N. The gradient of
    the second form is Caffe's, whose distance carries ``+ 1e-4`` against a zero distance."""
    diff = (a - b).reshape(a.shape[0], -1)
    squared = (diff**2).sum(dim=1)
    same = similar.reshape(-1).to(torch.int64) != 0
    if legacy:
        apart = torch.clamp(margin - squared, min=0)
    else:
        distance = torch.sqrt(squared.detach())
        # value: the distance; gradient: d(squared) / (2 (distance + 1e-4)), as Caffe's Backward_cpu
        shaped = distance + gradient_only(squared) / (2 * (distance + 1e-4))
        apart = torch.clamp(margin - shaped, min=0) ** 2
    return caffe_running_sum(torch.where(same, squared, apart)) / (2 * a.shape[0])


@register_layer("ContrastiveLoss", bottoms=3, tops=1)
def contrastive_loss_layer(ctx: LayerContext) -> Converted:
    ctx.legacy_bottoms()
    p = ctx.param("contrastive_loss_param")
    _same_count(ctx, 0, 1)
    kwargs = {"margin": float(p.get("margin")), "legacy": bool(p.get("legacy_version"))}
    return Converted(function=contrastive_loss, kwargs=kwargs, role="loss", output_shape=lambda s: ())


def _log_clamped(prob: Tensor) -> Tensor:
    """``log(max(prob, 1e-20))`` whose gradient is ``1 / max(prob, 1e-20)`` (Caffe's Backward_cpu)."""
    floor = prob.clamp(min=LOG_THRESHOLD).detach()
    return torch.log(floor) + gradient_only(prob) / floor


def infogain_loss(
    score: Tensor, label: Tensor, infogain: Tensor, axis: int, normalization: str, ignore_label: int | None
) -> Tensor | tuple[Tensor, Tensor]:
    """BVLC master's InfogainLoss: ``-sum_l H[label, l] log(max(softmax(score)_l, 1e-20))`` per
    position (classes on ``axis``; ignored labels left out), normalized as ``loss_param`` says;
    the gradient is Caffe's ``p_l sum(H[label]) - H[label, l]``."""
    axis = axis + score.dim() if axis < 0 else axis
    classes = score.shape[axis]
    check_label_values("InfogainLoss", label, classes, ignore_label)
    log_prob = F.log_softmax(score, dim=axis)
    prob = log_prob.exp().detach()
    # the value from the clamped probability, the gradient the softmax's
    log_prob = log_prob + (torch.log(prob.clamp(min=LOG_THRESHOLD)) - log_prob).detach()
    moved = log_prob.movedim(axis, -1).reshape(-1, classes)
    target = label.reshape(-1).long()
    valid = torch.ones_like(target, dtype=torch.bool) if ignore_label is None else target != ignore_label
    rows = infogain.detach().reshape(classes, classes).to(score.dtype)[torch.where(valid, target, 0)]
    terms = -(rows * moved) * valid.to(score.dtype)[:, None]
    total = caffe_running_sum(terms, valid[:, None].expand_as(terms))  # (position, class) order
    outer = math.prod(score.shape[:axis])
    count = {"FULL": score.numel() // classes, "BATCH_SIZE": outer, "NONE": 1}
    if normalization == "VALID":
        normalizer = valid.sum().to(score.dtype)
    else:
        normalizer = torch.tensor(float(count[normalization]), device=score.device)
    return total / normalizer.clamp(min=1.0)


def infogain_loss_v1(prob: Tensor, label: Tensor, infogain: Tensor) -> Tensor:
    """Caffe 1.0's InfogainLoss, on probabilities: ``-sum_j H[label, j] log(max(prob_j, 1e-20)) / N``
    (each item's values flattened), its gradient ``-H[label, j] / max(prob_j, 1e-20) / N``."""
    probs = prob.reshape(prob.shape[0], -1)
    check_label_values("InfogainLoss", label, probs.shape[1], None)
    rows = infogain.detach().reshape(probs.shape[1], probs.shape[1]).to(prob.dtype)[label.reshape(-1).long()]
    return caffe_running_sum(-(rows * _log_clamped(probs))) / prob.shape[0]


def _infogain_matrix(ctx: LayerContext, source: str) -> Tensor:
    """The H matrix of ``infogain_loss_param.source``: a binary ``BlobProto`` (Caffe opens the path
    from its working folder; so does this)."""
    from ..caffe.formats import blob_array, read_binary_net
    from ..errors import CaffeFormatError

    if not source:
        raise NetError(
            f"{ctx.where}: give the infogain matrix H as a third bottom or as infogain_loss_param.source "
            "(a binaryproto file)"
        )
    try:
        return torch.from_numpy(blob_array(read_binary_net(source, "BlobProto"), source).astype("float32"))
    except CaffeFormatError as exc:
        raise NetError(f"{ctx.where}: cannot read the infogain matrix: {exc}") from None


@register_layer("InfogainLoss", bottoms=(2, 3), tops=(1, 2), variants=("bvlc-master", "caffe-1.0"))
def infogain_loss_layer(ctx: LayerContext) -> Converted:
    p = ctx.param("infogain_loss_param")
    master = ctx.variant in (None, "bvlc-master")
    score = ctx.bottom_shape(0)
    if master:
        if "normalize" in ctx.param("loss_param"):
            raise NetError(f"{ctx.where}: Caffe refuses loss_param.normalize here: use normalization")
        axis = int(p.get("axis"))
        classes = check_labels(ctx, axis)
    else:
        if len(ctx.tops) > 1:
            raise NetError(f"{ctx.where}: Caffe 1.0's InfogainLoss makes one top")
        ctx.legacy_bottoms()  # (Caffe 1.0's reads num, channels, height, width of all three)
        classes = math.prod(score[1:])
        label = ctx.bottom_shape(1)
        if math.prod(label[1:]) != 1 or label[0] != score[0]:
            raise NetError(f"{ctx.where}: Caffe 1.0 takes one label per item (N, 1, 1, 1), got {list(label)}")
    if len(ctx.bottoms) == 3:
        h = ctx.bottom_shape(2)
        if math.prod(h) != classes * classes or (not master and tuple(h[-2:]) != (classes, classes)):
            raise NetError(f"{ctx.where}: H '{ctx.bottoms[2]}' {list(h)} must be {classes} x {classes}")
        matrix = None
    else:
        matrix = _infogain_matrix(ctx, str(p.get("source")))
        if matrix.numel() != classes * classes:
            raise NetError(
                f"{ctx.where}: the infogain matrix of '{p.get('source')}' {list(matrix.shape)} must hold "
                f"{classes} x {classes} values"
            )
    kwargs: dict[str, object] = {}
    if master:
        loss = ctx.param("loss_param")
        kwargs = {
            "axis": int(p.get("axis")),
            "normalization": str(loss.get("normalization")),
            "ignore_label": int(loss.get("ignore_label")) if "ignore_label" in loss else None,
        }
    probs = len(ctx.tops) == 2

    def function(score: Tensor, label: Tensor, *h: Tensor) -> Tensor | tuple[Tensor, Tensor]:
        if not master:
            return infogain_loss_v1(score, label, h[0])
        value = infogain_loss(score, label, h[0], **kwargs)  # type: ignore[arg-type]
        if probs:  # the second top: the softmax, sharing Caffe's data but not its diff
            return value, F.softmax(score.detach(), dim=int(kwargs["axis"]))
        return value

    def shapes(bottoms: list[tuple[int, ...]]) -> tuple[int, ...] | list[tuple[int, ...]]:
        return [(), bottoms[0]] if probs else ()

    if matrix is None:
        return Converted(function=function, role="loss", outputs=len(ctx.tops), output_shape=shapes)
    module = _InfogainWithMatrix(matrix, function)
    return Converted(module=module, role="loss", outputs=len(ctx.tops), output_shape=shapes)


class _InfogainWithMatrix(nn.Module):
    """InfogainLoss whose H comes from ``infogain_loss_param.source``: held as a buffer."""

    def __init__(self, infogain: Tensor, function: object) -> None:
        super().__init__()
        # the file's values: not a Caffe blob, and not a buffer (the builder empties those)
        self.infogain = infogain
        self.function = function

    def forward(self, score: Tensor, label: Tensor) -> Tensor | tuple[Tensor, Tensor]:
        return self.function(score, label, self.infogain.to(score.device))  # type: ignore[operator]
