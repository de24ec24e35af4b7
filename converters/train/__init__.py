"""Caffe's solvers in PyTorch: ``converters.load_solver(solver.prototxt)``, ``solver.step(feeds)``,
Caffe's snapshot files (see docs/TRAINING.md)."""

from __future__ import annotations

from .solver import Solver, load_solver, loss_weights
from .state import SolverStateFile, read_state, write_snapshot
from .testing import TestNetSpec, TestScores
from .updates import LR_POLICIES, SOLVER_TYPES, learning_rate

__all__ = [
    "LR_POLICIES",
    "SOLVER_TYPES",
    "Solver",
    "SolverStateFile",
    "TestNetSpec",
    "TestScores",
    "learning_rate",
    "load_solver",
    "loss_weights",
    "read_state",
    "write_snapshot",
]
