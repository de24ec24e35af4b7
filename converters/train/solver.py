"""Caffe's ``Solver`` in PyTorch: ``load_solver(solver.prototxt)`` then ``step(feeds)``.

One iteration is ``Solver::Step``'s: zero the diffs, ``iter_size`` forward/backward passes (autograd
accumulates the diffs as Caffe's backward does), then ``ApplyUpdate``: the learning rate, gradient
clipping by the global L2 norm, and for each learnable blob in net order ``Normalize`` (1/iter_size),
``Regularize`` (L2 or L1, ``weight_decay x decay_mult``), ``ComputeUpdateValue`` (the solver type's
rule, ``lr x lr_mult``), then ``data -= diff`` for all blobs.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, fx

from ..caffe.formats import read_prototxt, read_weights
from ..caffe.message import Message, unknown_named_fields
from ..caffe.netdef import layer_type, merged_state
from ..caffe.rules import first_invalid
from ..errors import CaffeFormatError, SolverError
from ..graph.builder import build_graph, select_layers
from ..graph.inputs import is_source
from ..layers.fillers import fill
from . import updates
from .state import read_state, write_snapshot
from .testing import TestNetSpec, TestScores, test_net_specs

PathLike = str | os.PathLike
Feeds = Mapping[str, Any] | Callable[[], Mapping[str, Any]]
Weights = PathLike | Mapping[str, list[np.ndarray]] | None

__all__ = ["Solver", "load_solver", "loss_weights"]

def loss_weights(layers: list[Message]) -> dict[str, float]:
    """Top -> its ``loss_weight`` for every top that counts in the loss (Caffe's ``SetLossWeights``:
    a loss layer's first top weighs 1 unless told otherwise)."""
    weights: dict[str, float] = {}
    for layer in layers:
        tops, written = list(layer.getall("top")), [float(w) for w in layer.getall("loss_weight")]
        if written and len(written) != len(tops):
            raise SolverError(
                f"layer '{layer.get('name')}' has {len(written)} loss_weight values for {len(tops)} tops"
            )
        if not written and layer_type(layer).endswith("Loss"):
            written = [1.0] + [0.0] * (len(tops) - 1)
        for top, weight in zip(tops, written, strict=False):
            if weight:
                weights[top] = weights.get(top, 0.0) + weight
    return weights


class Solver:
    """A Caffe solver over a TRAIN graph. Build it with :func:`load_solver`."""

    def __init__(
        self,
        param: Message,
        net: fx.GraphModule,
        *,
        path: Path | None = None,
        snapshot_prefix: str | None = None,
        test_nets: list[TestNetSpec] | None = None,
    ) -> None:
        where = str(path) if path is not None else "solver"
        self.param = param
        self.test_nets: list[TestNetSpec] = list(test_nets or [])
        """The solver's test nets (``test_net``/``test_net_param``/``net`` with ``test_iter``)."""
        self._test_graphs: dict[int, fx.GraphModule] = {}
        self.path = path
        self.type = updates.check_solver(param, where)
        self.net = net
        self.net.train()
        self.iter = 0
        self.current_step = 0
        self.iter_size = int(param.get("iter_size"))
        self.snapshot_prefix = (
            snapshot_prefix if snapshot_prefix is not None else str(param.get("snapshot_prefix"))
        )
        self.snapshot_format = "hdf5" if str(param.get("snapshot_format")) == "HDF5" else "binary"
        self.regularization = str(param.get("regularization_type"))
        self.last_outputs: dict[str, Tensor] = {}
        self._last_diffs: list[Tensor] | None = None
        definition = {str(layer.get("name")): layer for layer in net.caffe.definition.getall("layer")}
        self.loss_weights = loss_weights(list(definition.values()))
        missing = [top for top in self.loss_weights if top not in net.caffe.outputs]
        if missing:
            raise SolverError(f"{where}: loss tops {missing} are not outputs of the train net")
        if not self.loss_weights:
            raise SolverError(f"{where}: the train net has no loss (no *Loss layer and no loss_weight)")

        self.keys: list[str] = []  # learnable blobs in Caffe's order (state-dict keys)
        self.blob_shapes: list[tuple[int, ...]] = []
        self.lr_mults: list[float] = []
        self.decay_mults: list[float] = []
        self.layer_of: list[tuple[str, int]] = []
        self.owner_of: dict[tuple[str, int], int] = {}
        """Every layer blob ``(layer, i)`` -> its learnable blob's index (a shared blob: its owner's)."""
        owners: dict[str, int] = {}
        has_lr: list[bool] = []
        has_decay: list[bool] = []
        needs_diff: list[bool] = []
        state = net.state_dict(keep_vars=True)  # shared blobs appear under every sharer's key too
        for layer_name, layer in definition.items():  # Caffe's learnable_params: net order
            keys = net.caffe.parameter_blobs.get(layer_name, [])
            specs = list(layer.getall("param"))
            for i, key in enumerate(keys):
                spec = specs[i] if i < len(specs) else Message("ParamSpec")
                lr_mult, decay_mult = float(spec.get("lr_mult")), float(spec.get("decay_mult"))
                param_name = str(spec.get("name")) if "name" in spec else ""
                if param_name and param_name in owners:  # Net::AppendParam: share the owner's blob
                    index = owners[param_name]
                    self.owner_of[(layer_name, i)] = index
                    needs_diff[index] = needs_diff[index] or lr_mult != 0
                    if "lr_mult" in spec and not has_lr[index]:  # equal values are checked when built
                        has_lr[index], self.lr_mults[index] = True, float(np.float32(lr_mult))
                    if "decay_mult" in spec and not has_decay[index]:
                        has_decay[index], self.decay_mults[index] = True, float(np.float32(decay_mult))
                    continue
                if layer_type(layer) == "BatchNorm":
                    if i < len(specs) and lr_mult != 0:
                        raise SolverError(
                            f"layer '{layer_name}' (BatchNorm): param {i} has lr_mult {lr_mult}; "
                            "batch normalization statistics cannot be learned: use lr_mult: 0"
                        )
                    lr_mult = 0.0
                    if len(specs) == 3:  # BVLC's UpgradeNetBatchNorm: three specs -> lr and decay 0
                        decay_mult = 0.0
                fixed = getattr(net.get_submodule(key.rpartition(".")[0]), "fixed_mults", {}).get(i)
                if fixed is not None:  # a layer that sets its own blobs' mults (PSPNet's BN)
                    lr_mult, decay_mult = fixed
                if param_name:
                    owners[param_name] = len(self.keys)
                self.owner_of[(layer_name, i)] = len(self.keys)
                self.keys.append(key)
                self.blob_shapes.append(tuple(net.caffe.parameter_shapes[layer_name][i]))
                self.lr_mults.append(float(np.float32(lr_mult)))
                self.decay_mults.append(float(np.float32(decay_mult)))
                self.layer_of.append((layer_name, i))
                has_lr.append("lr_mult" in spec)
                has_decay.append("decay_mult" in spec)
                needs_diff.append(lr_mult != 0)
        for key, needed in zip(self.keys, needs_diff, strict=True):
            tensor = state[key]
            if isinstance(tensor, torch.nn.Parameter):
                tensor.requires_grad_(needed)  # Caffe computes no diff where every use has lr_mult 0
        self._tensors = [state[k] for k in self.keys]
        count = updates.history_count(self.type, len(self.keys))
        self.history: list[Tensor] = [
            torch.zeros_like(self._tensors[i % len(self.keys)]) for i in range(count)
        ]

    @property
    def learning_rate(self) -> float:
        """The rate the next update uses (``GetLearningRate`` at the current iteration)."""
        return updates.learning_rate(self.param, self.iter, self.current_step)[0]

    @property
    def max_iter(self) -> int:
        """The solver's ``max_iter``."""
        return int(self.param.get("max_iter"))

    def _inputs(self, feeds: Mapping[str, Any], net: fx.GraphModule | None = None) -> dict[str, Tensor]:
        if not isinstance(feeds, Mapping):
            raise SolverError(f"feeds must be a dict of input tensors, got {type(feeds).__name__}")
        needed = list((net if net is not None else self.net).caffe.inputs)
        missing = [b for b in needed if b not in feeds]
        if missing:
            raise SolverError(
                f"feeds lack {', '.join(map(repr, missing))} (the net reads {', '.join(needed)})"
            )
        device = self._tensors[0].device if self._tensors else torch.device("cpu")
        return {b: torch.as_tensor(feeds[b], dtype=torch.float32, device=device) for b in needed}

    def forward_backward(self, feeds: Mapping[str, Any]) -> float:
        """One forward/backward pass (``Net::ForwardBackward``): diffs accumulate; returns the loss."""
        outputs = self.net(**self._inputs(feeds))
        total: Tensor | None = None
        for top, weight in self.loss_weights.items():
            term = outputs[top].sum() * weight
            total = term if total is None else total + term
        assert total is not None
        if total.requires_grad:
            total.backward()
        self.last_outputs = {k: v.detach() for k, v in outputs.items()}
        return float(total.detach())

    def step(self, feeds: Feeds, iters: int = 1) -> float:
        """``iters`` Caffe iterations; returns the last one's loss (averaged over ``iter_size``)."""
        loss = np.float32(0)
        for _ in range(iters):
            for tensor in self._tensors:  # ClearParamDiffs (in place: no reallocation per iteration)
                if tensor.grad is not None:
                    tensor.grad.zero_()
            loss = np.float32(0)
            for _ in range(self.iter_size):
                batch = feeds() if callable(feeds) else feeds
                try:
                    loss += np.float32(self.forward_backward(batch))
                except SolverError:
                    raise
                except (ValueError, RuntimeError, IndexError) as exc:  # a layer refusing this batch
                    message = " ".join(str(exc).split()) or type(exc).__name__
                    raise SolverError(f"iteration {self.iter}: {message}") from exc
            loss /= np.float32(self.iter_size)
            self.apply_update()
        return float(loss)

    @property
    def test_due(self) -> bool:
        """Whether Caffe tests before the next iteration (``Solver::Step``): every
        ``test_interval`` iterations, at iteration 0 only with ``test_initialization``."""
        interval = int(self.param.get("test_interval"))
        if not self.test_nets or interval <= 0 or self.iter % interval:
            return False
        return self.iter > 0 or bool(self.param.get("test_initialization"))

    def test(self, feeds: Feeds, index: int = 0) -> TestScores:
        """``Solver::Test``: ``test_iter`` forward passes of test net ``index`` (TEST phase, the train
        net's current weights shared by layer name), each output value averaged over them. ``feeds``
        is the test net's input dict, or a callable giving one per pass."""
        if not 0 <= index < len(self.test_nets):
            raise SolverError(f"test net #{index}: the solver has {len(self.test_nets)} test net(s)")
        spec = self.test_nets[index]
        sums: dict[str, np.ndarray] = {}
        total = np.float32(0)
        graph = self._test_graphs.get(index)
        weights: dict[str, float] = {}
        for _ in range(spec.iters):
            batch = feeds() if callable(feeds) else feeds
            if graph is None:
                graph = self._build_test_graph(index, batch)
            weights = loss_weights(list(graph.caffe.definition.getall("layer")))
            with torch.no_grad():
                outputs = graph(**self._inputs(batch, graph))
            for top, weight in weights.items():
                total += np.float32(float(outputs[top].sum()) * weight)
            for name in sorted(graph.caffe.outputs):  # Caffe's output blobs: a std::set, by name
                value = outputs[name].detach().cpu().numpy().astype(np.float32)
                sums[name] = value if name not in sums else sums[name] + value
        count = np.float32(spec.iters)
        means = {name: (value / count).astype(np.float32) for name, value in sums.items()}
        loss = float(total / count) if bool(self.param.get("test_compute_loss")) else None
        return TestScores(self.iter, index, means, {k: v for k, v in weights.items() if k in means}, loss)

    def _build_test_graph(self, index: int, feeds: Mapping[str, Any]) -> fx.GraphModule:
        """Test net ``index`` built for these inputs' shapes, its layers that the train net has
        sharing the train net's blobs (``ShareTrainedLayersWith``)."""
        spec = self.test_nets[index]
        if not isinstance(feeds, Mapping):
            raise SolverError(f"feeds must be a dict of input tensors, got {type(feeds).__name__}")
        device = self._tensors[0].device if self._tensors else None
        layers = select_layers(spec.definition, phase=spec.phase, level=spec.level, stages=spec.stages)
        reads = {str(top) for layer in layers if is_source(layer) for top in layer.getall("top")}
        shapes = {k: tuple(np.shape(v)) for k, v in feeds.items() if k in reads}  # others: not its inputs
        graph = build_graph(
            spec.definition, None, phase=spec.phase, level=spec.level, stages=spec.stages, with_loss=True,
            strict=False, input_shapes=shapes, device=device,
        )  # fmt: skip
        seed = int(self.param.get("random_seed"))
        _fill_like_caffe(graph, seed if seed >= 0 else 0)
        trained = self.net.state_dict(keep_vars=True)
        for layer, keys in graph.caffe.parameter_blobs.items():
            source = self.net.caffe.parameter_blobs.get(layer)
            if source is None:
                continue
            if len(source) != len(keys):
                raise SolverError(
                    f"test net #{index}: layer '{layer}' has {len(keys)} blobs, the train net's "
                    f"has {len(source)}"
                )
            for key, train_key in zip(keys, source, strict=True):
                owner, _, attr = key.rpartition(".")
                module = graph.get_submodule(owner)
                value = trained[train_key]
                current = getattr(module, attr)
                if tuple(current.shape) != tuple(value.shape):
                    raise SolverError(
                        f"test net #{index}: layer '{layer}' blob '{attr}' is {list(current.shape)}, the "
                        f"train net's is {list(value.shape)}"
                    )
                table = module._parameters if attr in module._parameters else module._buffers
                table[attr] = value
        graph.eval()
        self._test_graphs[index] = graph
        return graph

    @torch.no_grad()
    def apply_update(self) -> None:
        """``ApplyUpdate``: rate, clipping, then normalise, regularise and update every blob."""
        rate, self.current_step = updates.learning_rate(self.param, self.iter, self.current_step)
        diffs = [t.grad if t.grad is not None else torch.zeros_like(t) for t in self._tensors]
        clip = float(np.float32(self.param.get("clip_gradients")))
        if clip >= 0:
            sumsq = np.float32(0)
            for d in diffs:
                flat = d.reshape(-1)
                sumsq += np.float32(torch.dot(flat, flat).item())  # sumsq_diff: a float dot product
            norm = np.sqrt(sumsq, dtype=np.float32)
            if norm > clip:
                scale = float(np.float32(clip) / norm)
                for d in diffs:
                    d.mul_(scale)
        weight_decay = np.float32(self.param.get("weight_decay"))
        normalization = float(np.float32(1) / np.float32(self.iter_size))
        new_diffs = []
        for i, (tensor, diff) in enumerate(zip(self._tensors, diffs, strict=False)):
            if self.iter_size != 1:
                diff.mul_(normalization)
            local_decay = float(weight_decay * np.float32(self.decay_mults[i]))
            updates.regularize(diff, tensor, local_decay, self.regularization)
            local_rate = float(np.float32(rate) * np.float32(self.lr_mults[i]))
            new_diffs.append(
                updates.compute_update(
                    self.type, self.param, diff, self.history, i, len(self._tensors), local_rate, self.iter
                )
            )
        for tensor, diff in zip(self._tensors, new_diffs, strict=False):
            tensor.sub_(diff)
        self._last_diffs = new_diffs
        self.iter += 1

    def weights(self) -> dict[str, list[np.ndarray]]:
        """``{layer: [blobs]}`` as Caffe would save them (Caffe's blob shapes, float32 copies; a
        shared blob under each layer that uses it)."""
        out: dict[str, list[np.ndarray]] = {}
        for (layer, _), index in self.owner_of.items():
            array = self._tensors[index].detach().cpu().numpy().astype(np.float32)
            out.setdefault(layer, []).append(array.reshape(self.blob_shapes[index]))
        return out

    def load_weights(self, weights: Mapping[str, list[np.ndarray]], source: str = "weights") -> None:
        """Copy stored blobs into the net by layer name (``CopyTrainedLayersFrom``: other layers are
        ignored; a layer's blob count and sizes must match). Everything is checked first: a
        refusal changes no parameter."""
        by_layer: dict[str, list[int]] = {}
        for (layer, _), index in self.owner_of.items():
            by_layer.setdefault(layer, []).append(index)
        copies: list[tuple[Tensor, np.ndarray]] = []
        for layer, blobs in weights.items():
            if layer not in by_layer:
                continue
            indices = by_layer[layer]
            if len(blobs) != len(indices):
                raise SolverError(
                    f"{source}: layer '{layer}' has {len(blobs)} blobs, the net needs {len(indices)}"
                )
            for j, (index, blob) in enumerate(zip(indices, blobs, strict=False)):
                tensor = self._tensors[index]
                if blob.size != tensor.numel():
                    raise SolverError(
                        f"{source}: layer '{layer}' blob {j} has shape "
                        f"{list(blob.shape)}, the net needs {list(self.blob_shapes[index])}"
                    )
                copies.append((tensor, blob))
        with torch.no_grad():
            for tensor, blob in copies:
                tensor.copy_(torch.from_numpy(np.array(blob, dtype=np.float32)).reshape(tensor.shape))

    def snapshot(self, prefix: str | None = None) -> tuple[str, str]:
        """Write ``<prefix>_iter_<N>.caffemodel`` and ``.solverstate`` (``.caffemodel.h5`` and
        ``.solverstate.h5`` with ``snapshot_format: HDF5``); returns both paths."""
        prefix = prefix if prefix is not None else self.snapshot_prefix
        if not prefix:
            raise SolverError("no snapshot_prefix: set it in the solver or pass snapshot(prefix=...)")
        diffs = None
        if bool(self.param.get("snapshot_diff")) and self._last_diffs is not None:
            diffs = [
                d.detach().cpu().numpy().reshape(s)
                for d, s in zip(self._last_diffs, self.blob_shapes, strict=False)
            ]
        return write_snapshot(self, f"{prefix}_iter_{self.iter}", self.snapshot_format, diffs)

    def restore(self, path: PathLike, *, beside: bool = False) -> None:
        """Continue from a solverstate written by Caffe or by :meth:`snapshot` (binary or ``.h5``):
        iteration, current step, history and the learned net it names (as written, as Caffe reads
        it, else beside the solverstate; ``beside=True``: beside it first, for a run folder that
        was moved or copied)."""
        state = read_state(path, [tuple(t.shape) for t in self.history])
        steps = len(self.param.getall("stepvalue"))
        multistep = str(self.param.get("lr_policy")) == "multistep"
        if state.iter < 0 or state.current_step < 0 or (multistep and state.current_step > steps):
            raise SolverError(
                f"{path}: iter {state.iter} and current_step {state.current_step} are not a point this "
                f"solver can reach (iter >= 0, current_step from 0 to its {steps} stepvalues)"
            )
        expected = len(self.history)
        if len(state.history) != expected:
            raise SolverError(
                f"{path}: {len(state.history)} history blobs, this {self.type} solver needs {expected} "
                "(a different solver type or net?)"
            )
        for i, (target, blob) in enumerate(zip(self.history, state.history, strict=False)):
            if blob.size != target.numel():
                raise SolverError(
                    f"{path}: history blob {i} has {blob.size} values, parameter "
                    f"'{self.keys[i % len(self.keys)]}' has {target.numel()}"
                )
        if state.learned_net:  # checked whole before any parameter changes; the history after it
            learned = _find_learned_net(state.learned_net, Path(path), beside)
            self.load_weights(read_weights(learned), str(learned))
        with torch.no_grad():
            for target, blob in zip(self.history, state.history, strict=False):
                target.copy_(torch.from_numpy(np.array(blob, dtype=np.float32)).reshape(target.shape))
        self.iter = state.iter
        self.current_step = state.current_step


def _find_learned_net(name: str, state_path: Path, beside: bool = False) -> Path:
    """The caffemodel a solverstate names: as written (relative to the working directory, as Caffe
    reads it), else next to the solverstate (with ``beside``, next to it first)."""
    candidates = [Path(name), state_path.parent / Path(name).name]
    if beside:
        candidates.reverse()
    for candidate in candidates:
        if _exists(candidate) and candidate.is_file():
            return candidate
    raise SolverError(
        f"{state_path}: learned_net {name!r} not found (looked in the working directory and next to the "
        "solverstate): put the .caffemodel there"
    )


def _exists(path: Path) -> bool:
    """Whether ``path`` names something; a name the system refuses (too long, a NUL) names nothing."""
    try:
        return path.exists()
    except (OSError, ValueError):
        return False


def _resolve(name: str, base: Path | None) -> Path:
    """A path from a solver file: relative to the solver's folder, else the working directory."""
    path = Path(name)
    if path.is_absolute() or base is None:
        return path
    near = base / path
    return near if _exists(near) or not _exists(path) else path


def _net_param(param: Message, base: Path | None, where: str) -> Message:
    fields = [f for f in ("net", "net_param", "train_net", "train_net_param") if f in param]
    if len(fields) != 1:
        raise SolverError(
            f"{where}: {'no' if not fields else 'more than one'} train net "
            f"({', '.join(fields) if fields else 'give one of net, net_param, train_net, train_net_param'})"
        )
    field = fields[0]
    if field.endswith("_param"):
        return param.get(field)
    net_path = _resolve(str(param.get(field)), base)
    if not _exists(net_path):
        raise SolverError(
            f"{where}: {field} {str(param.get(field))!r} not found (relative to {base or Path.cwd()})"
        )
    return read_prototxt(net_path)  # refuses what is not a regular file, naming it


def _net_state(param: Message, net: Message) -> tuple[str, int, list[str]]:
    """Caffe's TRAIN net state: TRAIN, merged with the net's ``state``, then ``train_state``."""
    states = [net.get("state")] if "state" in net else []
    states += [param.get("train_state")] if "train_state" in param else []
    return merged_state("TRAIN", states)


def load_solver(
    solver_prototxt: PathLike | Message,
    weights: Weights = None,
    *,
    device: str | torch.device | None = None,
    input_shapes: Mapping[str, Any] | None = None,
) -> Solver:
    """A :class:`Solver` from a ``SolverParameter`` file (or message): its TRAIN net with losses,
    the parameters from ``weights`` (a caffemodel path or ``{layer: [blobs]}``; also the solver's own
    ``weights:`` entries), the others filled by their fillers as Caffe fills them."""
    if isinstance(solver_prototxt, Message):
        param, path, base = solver_prototxt, None, None
    else:
        path = Path(solver_prototxt)
        try:
            param = read_prototxt(path, "SolverParameter")
        except CaffeFormatError:
            raise
        base = path.parent
    where = str(path) if path is not None else "solver"
    unknown = unknown_named_fields(param)
    if unknown:
        field, position = unknown[0]
        line = f" (line {position[0]})" if position else ""
        raise SolverError(
            f"{where}: '{field}'{line} is not a field of Caffe's SolverParameter: fix it or remove it"
        )
    problem = first_invalid(param)
    if problem is not None:
        raise SolverError(f"{where}: {problem}")
    updates.check_solver(param, where)
    net = _net_param(param, base, where)
    phase, level, stages = _net_state(param, net)
    stored: dict[str, list[np.ndarray]] = {}
    for entry in param.getall("weights"):
        stored.update(read_weights(_resolve(str(entry), base)))
    if weights is not None:
        stored.update(weights if isinstance(weights, Mapping) else read_weights(weights))
    graph = build_graph(
        net,
        stored or None,
        phase=phase,
        level=level,
        stages=stages,
        with_loss=True,
        strict=False,
        input_shapes=input_shapes,
        device=device,
    )
    graph = _with_loss_outputs(graph, net, stored, phase, level, stages, input_shapes, device)
    seed = int(param.get("random_seed"))
    _fill_like_caffe(graph, seed if seed >= 0 else 0)
    prefix = str(param.get("snapshot_prefix")) if "snapshot_prefix" in param else None
    if path is not None:
        if prefix is None:
            prefix = str(path.with_suffix(""))  # Caffe: the solver file's name without extension
        elif not Path(prefix).is_absolute():
            # Caffe's files are "<prefix>_iter_N": an empty prefix names them "_iter_N" in the folder
            prefix = (str(base / prefix) if prefix else str(base) + os.sep) if base is not None else prefix
    tests = test_net_specs(param, base, where, _resolve)
    return Solver(param, graph, path=path, snapshot_prefix=prefix or "", test_nets=tests)


def _with_loss_outputs(
    graph: fx.GraphModule,
    net: Message,
    stored: dict[str, list[np.ndarray]],
    phase: str,
    level: int,
    stages: list[str],
    input_shapes: Mapping[str, Any] | None,
    device: str | torch.device | None,
) -> fx.GraphModule:
    """The graph again with every weighted top among its outputs (a ``loss_weight`` on a blob that
    later layers read)."""
    weighted = loss_weights(list(graph.caffe.definition.getall("layer")))
    missing = [top for top in weighted if top not in graph.caffe.outputs]
    if not missing:
        return graph
    state = {k: v.detach().clone() for k, v in graph.state_dict().items()}
    rebuilt = build_graph(
        net, stored or None, phase=phase, level=level, stages=stages, with_loss=True, strict=False,
        input_shapes=input_shapes, device=device, outputs=graph.caffe.outputs + missing,
    )  # fmt: skip
    rebuilt.load_state_dict(state)
    return rebuilt


def _fill_like_caffe(graph: fx.GraphModule, seed: int = 0) -> None:
    """Refill the layers that had no stored weights with Caffe's own fillers (each converter's
    :attr:`Converted.fillers`; the builder draws inference-friendly values where a prototxt gives
    none)."""
    generator = torch.Generator().manual_seed(seed)
    state = graph.state_dict(keep_vars=True)
    filled: set[int] = set()  # a shared blob keeps its owner's (first) values, as Net::ShareWeights
    with torch.no_grad():
        for name in graph.caffe.randomly_initialised:
            for key, shape, filler in zip(
                graph.caffe.parameter_blobs[name],
                graph.caffe.parameter_shapes[name],
                graph.caffe.parameter_fillers[name],
                strict=True,
            ):
                if id(state[key]) in filled:
                    continue
                filled.add(id(state[key]))
                state[key].copy_(fill(shape, filler, generator).reshape(state[key].shape))
