"""Caffe's test nets (``Solver::InitTestNets`` and ``Solver::Test``): which nets a solver tests, with
which state, and what ``Test`` reports, the mean of every output value over ``test_iter`` forward
passes with the train net's weights."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np

from ..caffe.formats import read_prototxt
from ..caffe.message import Message
from ..caffe.netdef import merged_state
from ..errors import SolverError


@dataclasses.dataclass
class TestNetSpec:
    """One test net: its definition, Caffe's net state for it and its ``test_iter``."""

    __test__ = False  # not a pytest class

    definition: Message
    phase: str
    level: int
    stages: list[str]
    iters: int
    source: str


@dataclasses.dataclass
class TestScores:
    """What one ``Solver::Test`` found: each output blob's mean over the ``test_iter`` passes (in
    the blob's shape), the loss weight of each loss output, and with ``test_compute_loss`` the mean
    total loss."""

    __test__ = False

    iter: int
    net: int
    means: dict[str, np.ndarray]
    loss_weights: dict[str, float]
    loss: float | None

    def lines(self) -> list[str]:
        """The report as Caffe logs it: one ``Test net output #k`` line per output value."""
        out = [f"Iteration {self.iter}, Testing net (#{self.net})"]
        if self.loss is not None:
            out.append(f"Test loss: {self.loss:.6g}")
        k = 0
        for name, mean in self.means.items():
            weight = self.loss_weights.get(name, 0.0)
            for value in mean.reshape(-1):
                extra = f" (* {weight:g} = {weight * float(value):.6g} loss)" if weight else ""
                out.append(f"    Test net output #{k}: {name} = {float(value):.6g}{extra}")
                k += 1
        return out


def _state(net: Message, override: Message | None) -> tuple[str, int, list[str]]:
    """TEST, merged with the net's own ``state``, then with the solver's ``test_state``."""
    states = [net.get("state")] if "state" in net else []
    return merged_state("TEST", states + ([override] if override is not None else []))


def test_net_specs(param: Message, base: Path | None, where: str, resolve: Any) -> list[TestNetSpec]:
    """The solver's test nets in Caffe's order: ``test_net_param``, ``test_net``, then as many
    copies of ``net``/``net_param`` as ``test_iter`` values remain. Refuses what Caffe refuses."""
    generic = [f for f in ("net", "net_param") if f in param]
    explicit: list[tuple[Message, str]] = [(m, "test_net_param") for m in param.getall("test_net_param")]
    for name in param.getall("test_net"):
        path = resolve(str(name), base)
        if not Path(path).is_file():
            raise SolverError(f"{where}: test_net {name!r} not found (relative to {base or Path.cwd()})")
        explicit.append((read_prototxt(path), f"test_net file: {name}"))
    iters = [int(i) for i in param.getall("test_iter")]
    if (generic and len(iters) < len(explicit)) or (not generic and len(iters) != len(explicit)):
        raise SolverError(
            f"{where}: {len(iters)} test_iter value(s) for {len(explicit)} test net(s): give test_iter for "
            "each test network"
        )
    nets = list(explicit)
    if generic:
        field = generic[0]
        if field == "net_param":
            definition = param.get("net_param")
        else:
            path = resolve(str(param.get("net")), base)
            definition = read_prototxt(path)
        nets += [(definition, field)] * (len(iters) - len(explicit))
    states = list(param.getall("test_state"))
    if states and len(states) != len(nets):
        raise SolverError(
            f"{where}: {len(states)} test_state value(s) for {len(nets)} test net(s): give none or one each"
        )
    if nets and int(param.get("test_interval")) <= 0:
        raise SolverError(f"{where}: the solver has test nets but no test_interval: set test_interval > 0")
    specs = []
    for i, ((definition, source), count) in enumerate(zip(nets, iters, strict=True)):
        phase, level, stages = _state(definition, states[i] if states else None)
        specs.append(TestNetSpec(definition, phase, level, stages, count, source))
    return specs
