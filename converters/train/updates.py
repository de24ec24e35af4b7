"""Caffe's learning-rate policies and the six solvers' update rules, in Caffe's float32 arithmetic
and order of operations (``SGDSolver::GetLearningRate``, ``*Solver::ComputeUpdateValue``).

Scalars are computed as Caffe's C++ computes them: ``float`` where Caffe uses ``Dtype``, ``double``
where C++ promotes (``pow(float, int)``), then rounded to ``float``. Tensor updates are plain float32
tensor operations, one per BLAS call of Caffe's CPU code.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from ..caffe.message import Message
from ..errors import SolverError

f32 = np.float32

#: Caffe's solver type names, and the legacy ``solver_type`` enum values they replace.
SOLVER_TYPES = ("SGD", "Nesterov", "AdaGrad", "RMSProp", "AdaDelta", "Adam")
LEGACY_SOLVER_TYPES = {
    "SGD": "SGD", "NESTEROV": "Nesterov", "ADAGRAD": "AdaGrad", "RMSPROP": "RMSProp",
    "ADADELTA": "AdaDelta", "ADAM": "Adam",
}  # fmt: skip
LR_POLICIES = ("fixed", "step", "exp", "inv", "multistep", "poly", "sigmoid")


def history_count(solver_type: str, params: int) -> int:
    """How many history blobs a solver keeps: two per parameter for AdaDelta and Adam."""
    return 2 * params if solver_type in ("AdaDelta", "Adam") else params


def _pow(base: float, exponent: float) -> float:
    """C's ``pow``: HUGE_VAL where Python's ``math.pow`` raises an overflow."""
    try:
        return math.pow(base, exponent)
    except OverflowError:
        return math.inf


def learning_rate(param: Message, iteration: int, current_step: int) -> tuple[float, int]:
    """``(rate, current_step)`` as ``GetLearningRate`` gives them at ``iteration`` (``multistep``
    advances ``current_step`` by at most one step per call, as Caffe does)."""
    with np.errstate(over="ignore"):  # a rate past float's range is inf, as in Caffe
        return _learning_rate(param, iteration, current_step)


def _learning_rate(param: Message, iteration: int, current_step: int) -> tuple[float, int]:
    policy = str(param.get("lr_policy"))
    base_lr, gamma, power = f32(param.get("base_lr")), f32(param.get("gamma")), f32(param.get("power"))
    if policy == "fixed":
        rate = base_lr
    elif policy == "step":
        current_step = iteration // int(param.get("stepsize"))
        rate = f32(float(base_lr) * _pow(float(gamma), current_step))
    elif policy == "exp":
        rate = f32(float(base_lr) * _pow(float(gamma), iteration))
    elif policy == "inv":
        with np.errstate(over="ignore", divide="ignore"):
            rate = f32(base_lr * np.power(f32(1) + gamma * f32(iteration), -power, dtype=f32))
    elif policy == "multistep":
        steps = [int(v) for v in param.getall("stepvalue")]
        if current_step < len(steps) and iteration >= steps[current_step]:
            current_step += 1
        rate = f32(float(base_lr) * _pow(float(gamma), current_step))
    elif policy == "poly":
        fraction = f32(1) - f32(iteration) / f32(int(param.get("max_iter")))
        with np.errstate(over="ignore", divide="ignore"):
            rate = f32(base_lr * np.power(fraction, power, dtype=f32))
    elif policy == "sigmoid":
        with np.errstate(over="ignore"):
            e = np.exp(-gamma * (f32(iteration) - f32(int(param.get("stepsize")))), dtype=f32)
            rate = f32(base_lr * (f32(1) / (f32(1) + e)))
    else:
        raise SolverError(f"unknown lr_policy {policy!r}: use one of {', '.join(LR_POLICIES)}")
    return float(rate), current_step  # an overflow is inf, as C's pow gives it


def check_solver(param: Message, where: str) -> str:
    """The solver type (``type``, or the legacy ``solver_type``), after the checks Caffe makes."""
    if "type" in param or "solver_type" not in param:
        kind = str(param.get("type"))
    else:
        kind = LEGACY_SOLVER_TYPES[str(param.get("solver_type"))]
    if kind not in SOLVER_TYPES:
        raise SolverError(f"{where}: unknown solver type {kind!r}: use one of {', '.join(SOLVER_TYPES)}")
    policy = str(param.get("lr_policy")) if "lr_policy" in param else ""
    if policy not in LR_POLICIES:
        raise SolverError(
            f"{where}: lr_policy {policy!r} is {'unknown' if policy else 'missing'}: "
            f"set it to one of {', '.join(LR_POLICIES)}"
        )
    if policy in ("step", "sigmoid") and int(param.get("stepsize")) <= 0:
        raise SolverError(f"{where}: lr_policy {policy!r} needs a positive stepsize")
    if policy == "poly" and int(param.get("max_iter")) <= 0:
        raise SolverError(f"{where}: lr_policy 'poly' needs a positive max_iter")
    if str(param.get("regularization_type")) not in ("L1", "L2"):
        raise SolverError(
            f"{where}: unknown regularization_type {param.get('regularization_type')!r}: use L2 or L1"
        )
    if kind == "Adam" and float(param.get("momentum")) >= 1:
        raise SolverError(f"{where}: Adam's momentum must be below 1 (it divides by 1 - momentum^t), got "
                          f"{param.get('momentum')}")  # fmt: skip
    if policy in ("step", "exp", "multistep", "inv") and float(param.get("gamma")) < 0:
        # (sigmoid takes any gamma: a negative one is its decaying form; fixed and poly read none)
        raise SolverError(
            f"{where}: lr_policy {policy!r} needs a gamma of at least 0 (a negative one gives a learning "
            f"rate that changes sign), got {param.get('gamma')}"
        )
    if policy == "poly" and float(param.get("power")) < 0:
        raise SolverError(f"{where}: lr_policy 'poly' needs a power of at least 0, got {param.get('power')}")
    last = max(int(param.get("max_iter")), 0)
    steps = sum(1 for value in param.getall("stepvalue") if int(value) <= last)
    rate, _ = learning_rate(param, last, steps)
    if not math.isfinite(rate):
        raise SolverError(
            f"{where}: lr_policy {policy!r} (base_lr {float(param.get('base_lr')):g}, gamma "
            f"{float(param.get('gamma')):g}) "
            f"makes the learning rate overflow by iteration {last}: Caffe would train with an infinite rate"
        )
    if int(param.get("iter_size")) < 1:
        raise SolverError(f"{where}: iter_size must be at least 1, got {param.get('iter_size')}")
    if kind in ("AdaGrad", "RMSProp") and float(param.get("momentum")) != 0:
        raise SolverError(f"{where}: momentum cannot be used with {kind}: remove it or set it to 0")
    return kind


def axpby(a: float, x: Tensor, b: float, y: Tensor) -> None:
    """``y = a x + b y`` in place (``caffe_cpu_axpby``), without a temporary."""
    y.mul_(b).add_(x, alpha=a)


def compute_update(
    kind: str,
    param: Message,
    diff: Tensor,
    history: list[Tensor],
    index: int,
    count: int,
    local_rate: float,
    iteration: int,
) -> Tensor:
    """The new diff of parameter ``index`` (``ComputeUpdateValue``); updates ``history`` in place and
    may reuse ``diff``'s memory."""
    momentum = f32(param.get("momentum"))
    delta = float(f32(param.get("delta")))
    h = history[index]
    if kind == "SGD":
        axpby(local_rate, diff, float(momentum), h)
        return h  # Caffe copies the history into the diff: the same values
    if kind == "Nesterov":
        update = h.clone()
        axpby(local_rate, diff, float(momentum), h)
        axpby(float(f32(1) + momentum), h, -float(momentum), update)
        return update
    if kind == "AdaGrad":
        h.addcmul_(diff, diff)
        return diff.div_(h.sqrt().add_(delta)).mul_(local_rate)
    if kind == "RMSProp":
        decay = f32(param.get("rms_decay"))
        h.mul_(float(decay)).addcmul_(diff, diff, value=float(f32(1) - decay))
        return diff.div_(h.sqrt().add_(delta)).mul_(local_rate)
    if kind == "AdaDelta":
        h_update = history[count + index]
        h.mul_(float(momentum)).addcmul_(diff, diff, value=float(f32(1) - momentum))
        diff.mul_(h_update.add(delta).div_(h.add(delta)).sqrt_())
        h_update.mul_(float(momentum)).addcmul_(diff, diff, value=float(f32(1) - momentum))
        return diff.mul_(local_rate)
    if kind == "Adam":
        beta1, beta2 = momentum, f32(param.get("momentum2"))
        m, v = h, history[count + index]
        t = iteration + 1
        correction = f32(math.sqrt(1.0 - math.pow(float(beta2), t)) / (1.0 - math.pow(float(beta1), t)))
        axpby(float(f32(1) - beta1), diff, float(beta1), m)
        v.mul_(float(beta2)).addcmul_(diff, diff, value=float(f32(1) - beta2))
        denominator = v.sqrt().add_(delta)
        return torch.div(m, denominator, out=denominator).mul_(float(f32(local_rate) * correction))
    raise SolverError(f"unknown solver type {kind!r}")


def regularize(diff: Tensor, data: Tensor, local_decay: float, regularization: str) -> None:
    """``Regularize``: add ``local_decay`` x data (L2) or x sign(data) (L1) to ``diff`` in place."""
    if local_decay:
        diff.add_(data if regularization == "L2" else torch.sign(data), alpha=local_decay)
