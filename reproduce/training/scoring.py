"""Scoring during training, as the official ``score.seg_tests``: the validation net (TEST phase, the
train net's current parameters) over the whole validation split in order, one confusion matrix per
scored head, the mean loss, and the paper's four metrics (:mod:`eval.metrics`).

With several processes each scores every ``world``-th image and the matrices and losses are summed
with ``torch.distributed.all_reduce``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor

import torch
from torch import Tensor, fx
from torch.func import functional_call

from converters.fcn.nets import net_definition
from converters.graph.builder import build_graph
from eval.datasets import SegmentationDataset
from eval.metrics import ConfusionMatrix, scores

from .data import Fits, input_blobs, load_feeds
from .recipe import Recipe

__all__ = ["Scorer"]


class Scorer:
    """The validation net of a recipe and the split it scores."""

    def __init__(
        self,
        recipe: Recipe,
        dataset: SegmentationDataset,
        *,
        width: float = 1.0,
        device: torch.device | None = None,
        rank: int = 0,
        world: int = 1,
        fits: Fits | None = None,
    ) -> None:
        self.recipe = recipe
        self.fits = fits
        self.dataset = dataset
        self.device = device or torch.device("cpu")
        self.rank, self.world = rank, world
        definition = net_definition(recipe.model, recipe.val_split, width=width)
        shapes = {}
        for blob, (kind, _) in input_blobs(recipe.model).items():
            channels = 1 if kind == "label" or blob == "depth" else 3
            shapes[blob] = (1, channels, 64, 64)
        self.loss_tops = ["loss"] + [f"loss{h.score[5:]}" for h in recipe.heads[1:]]
        self.net: fx.GraphModule = build_graph(
            definition, phase="TEST", with_loss=True, input_shapes=shapes, initialise=False,
            device="meta", strict=False, outputs=[h.score for h in recipe.heads] + self.loss_tops,
        )  # fmt: skip
        self.heads = {h.head: h for h in recipe.heads}
        by_name = {h.name: h for h in dataset.heads}
        self.classes = {h.head: by_name[h.head] for h in recipe.heads}

    def __call__(
        self, parameters: Mapping[str, Tensor], progress: Callable[[int], None] | None = None
    ) -> dict:
        """Scores with ``parameters`` (the train net's, shared, not copied):
        ``{"loss": mean loss, head: {metric: value, "per_class_iu": [...]}}``."""
        matrices = {head: ConfusionMatrix(self.classes[head].num_classes, self.device) for head in self.heads}
        indices = list(range(self.rank, len(self.dataset), self.world))
        loss = torch.zeros((), dtype=torch.float64)
        model = self.recipe.model
        with torch.no_grad(), ThreadPoolExecutor(max_workers=2) as pool:
            loads = [pool.submit(load_feeds, model, self.dataset, i, fits=self.fits) for i in indices[:2]]
            for n, _ in enumerate(indices):
                feeds = loads[n].result()
                if n + 2 < len(indices):
                    loads.append(pool.submit(load_feeds, model, self.dataset, indices[n + 2], fits=self.fits))
                feeds = {k: v.to(self.device) for k, v in feeds.items()}
                out = functional_call(self.net, dict(parameters), args=(), kwargs=feeds, strict=False)
                for head in self.recipe.heads:
                    prediction = out[head.score][0].argmax(0)
                    matrices[head.head].update(feeds[head.label][0, 0].to(torch.int64), prediction)
                loss += float(sum(float(out[t]) for t in self.loss_tops))
                if progress is not None:
                    progress(1)
        counts = {head: torch.as_tensor(m.numpy(), dtype=torch.float64) for head, m in matrices.items()}
        if self.world > 1:
            import torch.distributed as dist

            for matrix in counts.values():
                dist.all_reduce(matrix)
            dist.all_reduce(loss)
        result: dict = {"loss": float(loss) / max(1, len(self.dataset))}
        for head, matrix in counts.items():
            s = scores(matrix.numpy(), exclude=self.classes[head].exclude)
            result[head] = {**s.metrics(), "per_class_iu": s.to_json()["per_class_iu"]}
        return result

    @staticmethod
    def main_head(result: Mapping, heads: Sequence[str]) -> float:
        """The first head's mean IU (what the plot and the log headline)."""
        return float(result[heads[0]]["mean_iu"])
