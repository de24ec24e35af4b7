"""The official training recipe of each FCN model: solver values, schedule, data splits, start.

One :class:`Recipe` per model holds what the official ``<model>/solver.prototxt`` and
``<model>/solve.py`` say: the SGD values (``base_lr``, ``momentum``, ``iter_size``, ``max_iter``,
``weight_decay``, snapshots), how often ``solve.py`` scores the validation split and how many
iterations it runs in all (``solve.py`` loops ``solver.step(interval)``, so the run length is
``loops x interval``, not ``max_iter``), which weights it starts from, and which heads it scores.
:func:`solver_parameter` writes the ``SolverParameter`` message; for the official values it is
field for field the official ``solver.prototxt``.
"""

from __future__ import annotations

from dataclasses import dataclass

from converters.caffe.message import Message
from converters.fcn.nets import MODELS, SPLITS

__all__ = ["RECIPES", "Recipe", "ScoreHead", "recipe", "solver_parameter"]


@dataclass(frozen=True)
class ScoreHead:
    """One scored output: the score blob, the label blob it is compared with, the eval head name."""

    score: str
    label: str
    head: str


@dataclass(frozen=True)
class Recipe:
    """The official schedule of one model (its ``solver.prototxt`` and ``solve.py``)."""

    model: str
    dataset: str  # voc, pascalcontext, nyud, siftflow
    base_lr: float
    momentum: float
    iter_size: int
    max_iter: int
    test_iter: int
    snapshot: int  # 0: the official solver writes no snapshots (SIFT Flow)
    score_interval: int  # solve.py: solver.step(score_interval) between seg_tests
    loops: int  # solve.py: how many times it steps and scores
    init: str  # what solve.py copies in: a base net ("vgg16", "caffenet") or the previous stage
    heads: tuple[ScoreHead, ...] = (ScoreHead("score", "label", "semantic"),)
    weight_decay: float = 0.0005
    display: int = 20
    average_loss: int = 20

    @property
    def iterations(self) -> int:
        """How many iterations ``solve.py`` runs (``loops x score_interval``)."""
        return self.loops * self.score_interval

    @property
    def train_split(self) -> str:
        return SPLITS[self.model][0]

    @property
    def val_split(self) -> str:
        return SPLITS[self.model][1]


_SEMANTIC = (ScoreHead("score", "label", "semantic"),)
_SIFTFLOW = (ScoreHead("score_sem", "sem", "semantic"), ScoreHead("score_geo", "geo", "geometric"))


def _voc(model: str, lr: float, init: str, loops: int = 25, max_iter: int = 100000, **kw) -> Recipe:
    return Recipe(
        model,
        "voc",
        lr,
        kw.pop("momentum", 0.99),
        kw.pop("iter_size", 1),
        max_iter,
        736,
        4000,
        4000,
        loops,
        init,
        **kw,
    )


def _context(model: str, lr: float, init: str) -> Recipe:
    return Recipe(model, "pascalcontext", lr, 0.99, 1, 300000, 5105, 4000, 8000, 50, init)


def _nyud(model: str, lr: float, init: str) -> Recipe:
    return Recipe(model, "nyud", lr, 0.99, 1, 300000, 654, 2000, 2000, 50, init)


def _siftflow(model: str, lr: float, init: str) -> Recipe:
    return Recipe(model, "siftflow", lr, 0.99, 1, 300000, 200, 0, 2000, 50, init, heads=_SIFTFLOW)


RECIPES: dict[str, Recipe] = {
    r.model: r
    for r in (
        _voc("voc-fcn32s", 1e-10, "vgg16"),
        _voc("voc-fcn16s", 1e-12, "voc-fcn32s"),
        _voc("voc-fcn8s", 1e-14, "voc-fcn16s"),
        _voc("voc-fcn8s-atonce", 1e-10, "vgg16", loops=75, max_iter=300000),
        _voc("voc-fcn-alexnet", 1e-4, "caffenet", momentum=0.9, iter_size=20),
        _nyud("nyud-fcn32s-color", 1e-10, "vgg16"),
        _nyud("nyud-fcn32s-hha", 1e-10, "vgg16"),
        _nyud("nyud-fcn32s-color-hha", 1e-12, "nyud-fcn32s-color,nyud-fcn32s-hha"),
        _nyud("nyud-fcn32s-color-d", 1e-10, "vgg16"),
        _context("pascalcontext-fcn32s", 1e-10, "vgg16"),
        _context("pascalcontext-fcn16s", 1e-12, "pascalcontext-fcn32s"),
        _context("pascalcontext-fcn8s", 1e-14, "pascalcontext-fcn16s"),
        _siftflow("siftflow-fcn32s", 1e-10, "vgg16"),
        _siftflow("siftflow-fcn16s", 1e-12, "siftflow-fcn32s"),
        _siftflow("siftflow-fcn8s", 1e-12, "siftflow-fcn16s"),
    )
}
assert set(RECIPES) == set(MODELS)


def recipe(model: str) -> Recipe:
    """The recipe of ``model``; ``ValueError`` naming the models for an unknown one."""
    try:
        return RECIPES[model]
    except KeyError:
        raise ValueError(f"unknown model {model!r}; one of {', '.join(RECIPES)}") from None


def solver_parameter(
    model: str | Recipe,
    *,
    base_lr: float | None = None,
    momentum: float | None = None,
    iter_size: int | None = None,
    snapshot_prefix: str = "snapshot/train",
    nets: bool = True,
) -> Message:
    """The ``SolverParameter`` of ``model``'s official ``solver.prototxt`` (fields in its order), with
    ``base_lr``/``momentum``/``iter_size`` overridden when given. ``nets=False`` leaves out
    ``train_net``/``test_net``/``test_iter`` (for a solver whose net is given inline)."""
    r = model if isinstance(model, Recipe) else recipe(model)
    train, val = r.train_split, r.val_split
    p = Message("SolverParameter")
    if nets:
        p.set("train_net", f"{train}.prototxt")
        p.set("test_net", [f"{val}.prototxt"])
        p.set("test_iter", [r.test_iter])
    p.set("test_interval", 999999999)  # the official solvers never test by themselves: solve.py scores
    p.set("display", r.display)
    p.set("average_loss", r.average_loss)
    p.set("lr_policy", "fixed")
    p.set("base_lr", float(r.base_lr if base_lr is None else base_lr))
    p.set("momentum", float(r.momentum if momentum is None else momentum))
    p.set("iter_size", int(r.iter_size if iter_size is None else iter_size))
    p.set("max_iter", r.max_iter)
    p.set("weight_decay", r.weight_decay)
    if r.snapshot:
        p.set("snapshot", r.snapshot)
        p.set("snapshot_prefix", snapshot_prefix)
    p.set("test_initialization", False)
    return p
