"""Training and scoring layers kept when a graph is built with losses: SoftmaxWithLoss (Caffe's
normalizations) and Accuracy (Caffe's tie ranking, per-class top)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import NetError
from .registry import Converted, LayerContext, canonical_axis, register_layer


def softmax_with_loss(
    score: Tensor, label: Tensor, axis: int, ignore_label: int | None, normalization: str
) -> Tensor:
    """Caffe's SoftmaxWithLoss value (a 0-D tensor), with its normalization modes."""
    axis = axis + score.dim() if axis < 0 else axis
    log_prob = F.log_softmax(score, dim=axis)
    # Caffe clamps the value at log(FLT_MIN) but its gradient stays softmax - onehot: straight through
    floor = math.log(torch.finfo(torch.float32).tiny)
    log_prob = torch.where(log_prob < floor, log_prob - log_prob.detach() + floor, log_prob)
    moved = log_prob.movedim(axis, -1).reshape(-1, score.shape[axis])
    target = label.reshape(-1).long()
    valid = torch.ones_like(target, dtype=torch.bool) if ignore_label is None else target != ignore_label
    safe = torch.where(valid, target, torch.zeros_like(target))
    picked = moved.gather(1, safe.unsqueeze(1)).squeeze(1)
    total = -(picked * valid.to(picked.dtype)).sum()
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
    scores (ties ranked by class index, higher first; NaN when every label is ignored), and with
    ``per_class`` also each class's accuracy (0 for classes that do not occur)."""
    axis = axis + score.dim() if axis < 0 else axis
    classes = score.shape[axis]
    moved = score.movedim(axis, -1).reshape(-1, classes)
    target = label.reshape(-1).long()
    valid = torch.ones_like(target, dtype=torch.bool) if ignore_label is None else target != ignore_label
    safe = torch.where(valid, target, torch.zeros_like(target))
    true_score = moved.gather(1, safe.unsqueeze(1))
    index = torch.arange(classes, device=score.device).unsqueeze(0)
    ahead = (moved > true_score) | ((moved == true_score) & (index > safe.unsqueeze(1)))
    correct = (ahead.sum(dim=1) < top_k) & valid
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
    valid = torch.ones_like(score, dtype=torch.bool) if ignore_label is None else target != ignore_label
    total = -(terms * valid.to(score.dtype)).sum()
    count = {"FULL": score.numel(), "BATCH_SIZE": score.shape[0], "NONE": 1}
    if normalization == "VALID":
        normalizer = valid.sum().to(score.dtype)
    else:
        normalizer = torch.tensor(float(count[normalization]), device=score.device)
    return total / normalizer.clamp(min=1.0)


@register_layer("SigmoidCrossEntropyLoss", bottoms=2, tops=1)
def sigmoid_cross_entropy_loss_layer(ctx: LayerContext) -> Converted:
    _same_count(ctx, 0, 1)
    loss = ctx.param("loss_param")
    ignore = int(loss.get("ignore_label")) if "ignore_label" in loss else None
    kwargs = {"normalization": _normalization(ctx, "BATCH_SIZE"), "ignore_label": ignore}
    return Converted(
        function=sigmoid_cross_entropy_loss, kwargs=kwargs, role="loss", output_shape=lambda s: ()
    )


def hinge_loss(score: Tensor, label: Tensor, squared: bool) -> Tensor:
    """Caffe's HingeLoss: ``max(0, 1 -/+ score)`` (minus at the label's class), summed (L1) or
    squared and summed (L2), over the first axis's count."""
    scores = score.reshape(score.shape[0], -1)
    target = label.reshape(-1).long()
    sign = torch.ones_like(scores).scatter(1, target.unsqueeze(1), -1.0)
    margins = torch.clamp(1 + sign * scores, min=0)
    return (margins**2 if squared else margins).sum() / score.shape[0]


@register_layer("HingeLoss", bottoms=2, tops=1)
def hinge_loss_layer(ctx: LayerContext) -> Converted:
    squared = str(ctx.param("hinge_loss_param").get("norm")) == "L2"
    kwargs = {"squared": squared}
    return Converted(function=hinge_loss, kwargs=kwargs, role="loss", output_shape=lambda s: ())


#: Caffe's ``kLOG_THRESHOLD``: probabilities are clamped here before their log.
LOG_THRESHOLD = 1e-20


def multinomial_logistic_loss(prob: Tensor, label: Tensor) -> Tensor:
    """Caffe's MultinomialLogisticLoss: ``-sum(log(max(prob[label], 1e-20))) / N``."""
    probs = prob.reshape(prob.shape[0], -1)
    picked = probs.gather(1, label.reshape(-1, 1).long()).squeeze(1)
    return -torch.log(picked.clamp(min=LOG_THRESHOLD)).sum() / prob.shape[0]


@register_layer("MultinomialLogisticLoss", bottoms=2, tops=1)
def multinomial_logistic_loss_layer(ctx: LayerContext) -> Converted:
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
        shaped = distance + (squared - squared.detach()) / (2 * (distance + 1e-4))
        apart = torch.clamp(margin - shaped, min=0) ** 2
    return torch.where(same, squared, apart).sum() / (2 * a.shape[0])


@register_layer("ContrastiveLoss", bottoms=3, tops=1)
def contrastive_loss_layer(ctx: LayerContext) -> Converted:
    p = ctx.param("contrastive_loss_param")
    _same_count(ctx, 0, 1)
    kwargs = {"margin": float(p.get("margin")), "legacy": bool(p.get("legacy_version"))}
    return Converted(function=contrastive_loss, kwargs=kwargs, role="loss", output_shape=lambda s: ())
