"""``python -m converters.train SOLVER [--weights W | --snapshot S] [--iters N]``: train a Caffe
solver whose net reads HDF5Data or ImageData layers, with Caffe's snapshots.

Snapshots every ``snapshot`` iterations and at the end (``snapshot_after_train``); Ctrl-C finishes
the running iteration, writes a snapshot, prints the command that continues the run and exits 130
(a second Ctrl-C aborts at once). A loss or parameter that stops being finite stops the run with one
line, keeping the last good snapshot (``--keep-going-on-nan`` trains on, as Caffe). Test nets
(``test_iter``) run every ``test_interval`` iterations and after the last one, and print what Caffe
logs for them; every
``display`` iterations the loss smoothed over ``average_loss`` iterations, the train net's outputs
and the rate are printed as Caffe logs them.
"""

from __future__ import annotations

import os
import shlex
import signal
import sys
from pathlib import Path
from typing import Any

import numpy as np

from ..cli import EXIT_INTERRUPTED, Parser, device, run
from ..errors import SolverError


def _parser() -> Parser:
    parser = Parser(
        prog="python -m converters.train",
        description="Train a Caffe solver (SGD, Nesterov, AdaGrad, RMSProp, AdaDelta, Adam) exactly as "
        "Caffe does, for nets whose data come from HDF5Data or ImageData layers; its test nets run every "
        "test_interval iterations and print Caffe's test lines.",
    )
    parser.add_argument("solver", help="solver .prototxt (net:/train_net: relative to its folder)")
    start = parser.add_mutually_exclusive_group()
    start.add_argument("--weights", help="initial weights: .caffemodel or .caffemodel.h5")
    start.add_argument("--snapshot", help="a .solverstate (or .solverstate.h5) to continue from")
    parser.add_argument(
        "--iters", type=_positive, metavar="N", help="iterations to run, at least 1 (default: up to max_iter)"
    )
    parser.add_argument("--device", help="cpu (default) or cuda")
    parser.add_argument(
        "--no-progress", action="store_true", help="no progress bar (none either when stderr is no terminal)"
    )
    parser.add_argument(
        "--keep-going-on-nan",
        action="store_true",
        help="train on when the loss or a parameter stops being finite, as Caffe does (default: stop with "
        "one line, keeping the last good snapshot)",
    )
    return parser


def _positive(text: str) -> int:
    """``--iters``: an integer of at least 1 (0 iterations would write a snapshot of nothing)."""
    import argparse

    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {text!r}")
    return value


def _finite(solver: Any) -> bool:
    """Whether every parameter of the train net is finite (one synchronisation)."""
    import torch

    params = [p.detach() for p in solver.net.parameters()]
    return not params or bool(torch.stack([torch.isfinite(p).all() for p in params]).all())


def _feeds(sources: list[Any]) -> Any:
    def feeds() -> dict[str, Any]:
        batch: dict[str, Any] = {}
        for source in sources:
            batch.update(source())
        return batch

    return feeds


def _tests_in_run(solver: Any, start: int, end: int, final: bool) -> bool:
    """Whether a test falls in iterations ``start`` .. ``end`` (``end`` itself only if ``final``)."""
    interval = int(solver.param.get("test_interval"))
    if not solver.test_nets or interval <= 0:
        return False
    first = start if start > 0 or bool(solver.param.get("test_initialization")) else 1
    last = end if final else end - 1
    return first <= last and (last // interval) * interval >= first


def _test_feeds(solver: Any, base: Path, seed: int) -> list[Any]:
    from ..graph.builder import select_layers
    from .data import data_sources

    feeds = []
    for index, spec in enumerate(solver.test_nets):
        layers = select_layers(
            spec.definition, phase=spec.phase, level=spec.level, stages=spec.stages, with_loss=True
        )
        try:
            feeds.append(_feeds(data_sources(layers, base, seed, spec.phase)))
        except SolverError as exc:
            raise SolverError(f"test net #{index} ({spec.source}): {exc}") from None
    return feeds


class _Display:
    """Caffe's ``display`` lines: ``UpdateSmoothedLoss`` over ``average_loss`` iterations (float
    arithmetic, reset when the run starts, as each ``Step`` call resets it), then the train net's
    outputs and the rate of the update."""

    def __init__(self, solver: Any) -> None:
        self.every = int(solver.param.get("display"))
        self.window = max(int(solver.param.get("average_loss")), 1)
        self.start = solver.iter
        self.losses: list[np.float32] = []
        self.smoothed = np.float32(0)

    def update(self, solver: Any, iteration: int, loss: float, rate: float) -> None:
        loss32 = np.float32(loss)
        if len(self.losses) < self.window:
            self.losses.append(loss32)
            size = np.float32(len(self.losses))
            self.smoothed = np.float32((self.smoothed * (size - 1) + loss32) / size)
        else:
            slot = (iteration - self.start) % self.window
            self.smoothed = np.float32(self.smoothed + (loss32 - self.losses[slot]) / np.float32(self.window))
            self.losses[slot] = loss32
        if not self.every or iteration % self.every:
            return
        lines = [f"Iteration {iteration}, loss = {float(self.smoothed):.6g}"]
        weights = solver.loss_weights
        k = 0
        for name in sorted(solver.last_outputs):  # Caffe's output blobs: a std::set, by name
            for value in solver.last_outputs[name].reshape(-1).tolist():
                weight = weights.get(name, 0.0)
                extra = f" (* {weight:g} = {weight * value:.6g} loss)" if weight else ""
                lines.append(f"    Train net output #{k}: {name} = {value:.6g}{extra}")
                k += 1
        lines.append(f"Iteration {iteration}, lr = {rate:.6g}")
        _write("\n".join(lines))


def _write(text: str) -> None:
    """A log line on stdout, around the progress bar on stderr (which it clears and redraws)."""
    from tqdm import tqdm

    tqdm.write(text, file=sys.stdout)
    sys.stdout.flush()


def _test_all(solver: Any, feeds: list[Any]) -> None:
    for index, net_feeds in enumerate(feeds):
        _write("\n".join(solver.test(net_feeds, index).lines()))


def _main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from tqdm import tqdm

    from ..caffe.formats import read_prototxt
    from ..graph.builder import select_layers
    from .data import data_sources
    from .solver import _net_param, _net_state, load_solver

    path = Path(args.solver)
    if not path.is_file():
        raise SolverError(f"{path}: no such solver file")
    param = read_prototxt(path, "SolverParameter")
    net = _net_param(param, path.parent, str(path))
    phase, level, stages = _net_state(param, net)
    layers = select_layers(net, phase=phase, level=level, stages=stages, with_loss=True)
    seed = int(param.get("random_seed"))
    sources = data_sources(layers, path.parent, seed if seed >= 0 else 0, phase)
    shapes: dict[str, Any] = {}
    for source in sources:
        shapes.update(source.shapes())
    solver = load_solver(path, args.weights, device=device(args.device, default="cpu"), input_shapes=shapes)
    if args.snapshot:
        solver.restore(args.snapshot)
    iters = args.iters if args.iters is not None else solver.max_iter - solver.iter
    if iters <= 0:
        print(
            f"{path}: already complete: the solver is at iteration {solver.iter} of max_iter "
            f"{solver.max_iter}; give --iters N to train on",
            file=sys.stderr,
        )
        return 0
    every = int(param.get("snapshot"))
    folder = os.path.dirname(solver.snapshot_prefix)
    snapshots = every > 0 or bool(param.get("snapshot_after_train"))
    if snapshots and folder and not os.path.isdir(folder):  # Caffe finds out at its first snapshot
        raise SolverError(
            f"{path}: the snapshot folder '{folder}' of snapshot_prefix does not exist: create it or change "
            "snapshot_prefix"
        )
    feeds = _feeds(sources)
    start_iter = solver.iter
    final = solver.iter + iters == solver.max_iter  # Caffe's Solve tests once more at the end
    test_feeds = (
        _test_feeds(solver, path.parent, seed if seed >= 0 else 0)
        if _tests_in_run(solver, solver.iter, solver.iter + iters, final)
        else []
    )

    stop = {"requested": False}
    display = _Display(solver)

    def request_stop(signum: int, frame: Any) -> None:
        if stop["requested"]:  # the second Ctrl-C: now, without a snapshot
            print("\naborted at the second Ctrl-C: no snapshot of the iteration under way", file=sys.stderr)
            raise KeyboardInterrupt
        stop["requested"] = True  # Caffe's SIGINT action: finish the iteration, snapshot, stop
        print("\nstopping after this iteration to write a snapshot (Ctrl-C again to abort)", file=sys.stderr)

    previous = signal.signal(signal.SIGINT, request_stop)
    last_snapshot, last_good = -1, args.snapshot
    try:
        # disable=None: a progress bar only on a terminal, never frames in a redirected stderr
        with tqdm(total=iters, disable=True if args.no_progress else None, unit="it", file=sys.stderr) as bar:
            for _ in range(iters):
                if test_feeds and solver.test_due:
                    _test_all(solver, test_feeds)
                iteration, rate = solver.iter, solver.learning_rate
                loss = solver.step(feeds)
                display.update(solver, iteration, loss, rate)
                if not args.keep_going_on_nan and not (np.isfinite(loss) and _finite(solver)):
                    what = f"the loss is {loss}" if not np.isfinite(loss) else "a parameter is not finite"
                    kept = f"the last good snapshot is {last_good}" if last_good else "no snapshot yet"
                    raise SolverError(
                        f"iteration {solver.iter}: {what}: training diverged (a lower base_lr?); stopped "
                        f"without writing it, {kept} (--keep-going-on-nan trains on, as Caffe would)"
                    )
                bar.set_postfix(loss=f"{loss:.5g}", lr=f"{solver.learning_rate:.3g}", refresh=False)
                bar.update(1)
                if every and solver.iter % every == 0:
                    last_good = solver.snapshot()[1]
                    last_snapshot = solver.iter
                if stop["requested"]:
                    break
        interval = int(param.get("test_interval"))
        if test_feeds and final and not stop["requested"] and interval > 0 and solver.iter % interval == 0:
            _test_all(solver, test_feeds)
    finally:
        signal.signal(signal.SIGINT, previous)
    if stop["requested"] or (bool(param.get("snapshot_after_train")) and last_snapshot != solver.iter):
        model, state = solver.snapshot()
        print(f"snapshot: {model} {state}")
    if stop["requested"]:
        command = ["fcn-port", "solve", args.solver, "--snapshot", str(state)]
        if args.iters is not None:  # the iterations asked for and not yet run
            command += ["--iters", str(start_iter + iters - solver.iter)]
        if args.device:
            command += ["--device", args.device]
        hint = " ".join(shlex.quote(c) for c in command)
        print(f"interrupted at iteration {solver.iter}: continue with: {hint}", file=sys.stderr)
        return EXIT_INTERRUPTED
    print(f"iteration {solver.iter}, loss {loss:.6g}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """The command; returns its exit status."""
    return run(lambda: _main(argv))


if __name__ == "__main__":
    sys.exit(main())
