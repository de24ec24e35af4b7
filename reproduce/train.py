"""``python -m reproduce.train MODEL``: train an official FCN model with its official recipe.

The solver values of the model's ``solver.prototxt`` (:mod:`reproduce.training.recipe`), its train
net (``converters.fcn.nets.net_definition(model, "train")``) with the Python data layer's tops fed
from our readers of its training split (:mod:`reproduce.training.data`: one whole image per
iteration in the official layers' seeded random order, Caffe preprocessing, no augmentation), the
start weights ``solve.py`` copies in (:mod:`reproduce.training.init`), and scoring on the
validation split every ``score_interval`` iterations as ``score.seg_tests`` does
(:mod:`reproduce.training.scoring`). The solver is :func:`converters.load_solver` (Caffe's SGD step
for step).

The run folder (``--out``, default ``runs/MODEL``) holds ``solver.prototxt``/``train.prototxt``/
``val.prototxt`` (the run's own settings, as Caffe would run them), ``run.json`` (every setting and
data root), ``log.jsonl``, ``plot.png`` and ``snapshots/train_iter_N.{caffemodel,solverstate}`` in
Caffe's formats. ``--resume`` continues from the newest solverstate there with run.json's settings;
Ctrl-C finishes the iteration under way, writes a snapshot, prints the command that resumes the run
and exits 130. A loss or parameter that stops being finite stops the run (docs/TRAINING.md).

Several processes: ``torchrun --nproc_per_node N -m reproduce.train MODEL ...`` trains with
PyTorch's ``DistributedDataParallel`` (NCCL on GPUs, gloo on CPUs) as Caffe's multi-GPU training
does: each process runs ``iter_size`` passes on its own images, the gradients are averaged over the
processes, every process applies the same update. N processes give the parameters one process
gives with ``iter_size`` x N on the same images.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shlex
import shutil
import signal
import sys
import time
from collections.abc import Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from converters import cli
from converters.atomic import atomic_write
from converters.caffe.formats import write_prototxt
from converters.caffe.text import format_message
from converters.errors import UsageError
from converters.fcn.nets import net_definition
from converters.train import load_solver
from reproduce.training import data as training_data
from reproduce.training.init import start_weights
from reproduce.training.log import RunLog
from reproduce.training.recipe import RECIPES, Recipe, recipe, solver_parameter
from reproduce.training.scoring import Scorer
from weights.api import DOWNLOAD_HELP

__all__ = ["build_parser", "main", "train"]

SNAPSHOT_RE = re.compile(r"^train_iter_(\d+)\.solverstate$")
#: Settings a resumed run keeps from ``run.json`` (the net and the optimisation must not change): an
#: option given with ``--resume`` that differs is refused.
KEPT_ON_RESUME = ("model", "width", "init", "base_lr", "momentum", "iter_size", "seed", "train_list")
#: Settings a resumed run takes from ``run.json`` unless given again (then the new value applies, and
#: the command says so).
SCHEDULE = ("val_split", "val_limit", "iterations", "score_every", "snapshot_every", "display")
#: The command-line option of each setting.
OPTIONS = {
    "width": "--width", "init": "--init", "base_lr": "--base-lr", "momentum": "--momentum",
    "iter_size": "--iter-size", "seed": "--seed", "train_list": "--train-list", "val_split": "--val-split",
    "val_limit": "--val-limit", "iterations": "--iterations", "score_every": "--score-every",
    "snapshot_every": "--snapshot-every", "display": "--display",
}  # fmt: skip


def _ranged(kind: type, low: float | None = None, high: float | None = None, *, above: bool = False):
    """An argparse ``type``: a finite ``kind`` (int or float) in ``[low, high]`` (``(low, high]`` with
    ``above``); else argparse's one ``error:`` line saying what it must be."""
    if low is not None and high is not None:
        wanted = f"{'in (' if above else 'in ['}{low}, {high}]"
    elif low is not None:
        wanted = f"{'>' if above else '>='} {low}"
    else:
        wanted = "a number"
    noun = "an integer" if kind is int else "a number"

    def convert(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {noun} {wanted}, got {text!r}") from None
        if (
            not math.isfinite(value)
            or (low is not None and (value <= low if above else value < low))
            or (high is not None and value > high)
        ):
            raise argparse.ArgumentTypeError(f"must be {noun} {wanted}, got {text!r}")
        return value

    convert.__name__ = noun
    return convert


#: The values each numeric setting may take: the options' argparse types, and the check of a
#: resumed run's ``run.json``.
INT32 = 2**31 - 1  # the solver's counts are int32 fields of Caffe's SolverParameter (solver.prototxt)
RANGES = {
    "val_limit": _ranged(int, 1, INT32), "iterations": _ranged(int, 0, INT32),
    "score_every": _ranged(int, 0, INT32), "snapshot_every": _ranged(int, 0, INT32),
    "display": _ranged(int, 0, INT32), "base_lr": _ranged(float, 0), "momentum": _ranged(float, 0, 1),
    "iter_size": _ranged(int, 1, INT32), "width": _ranged(float, 0, 1, above=True),
    "seed": _ranged(int, 0, 2**32 - 1), "processes": _ranged(int, 1, INT32),
}  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    """The command-line options."""
    parser = cli.Parser(
        prog="python -m reproduce.train",
        description="Train an official FCN model with the official recipe (solver.prototxt, solve.py, "
        "the Python data layers), as Caffe does, and score it on its validation split as it goes.",
        epilog="Dataset roots may also come from FCN_PORT_SBD, FCN_PORT_VOC2011, FCN_PORT_VOC2010, "
        "FCN_PORT_CONTEXT, FCN_PORT_NYUD, FCN_PORT_SIFTFLOW. Several processes: torchrun "
        "--nproc_per_node N -m reproduce.train MODEL ...",
    )
    parser.add_argument("model", choices=list(RECIPES), metavar="MODEL", help=", ".join(RECIPES))
    start = parser.add_argument_group("start")
    start.add_argument(
        "--init",
        action="append",
        metavar="SOURCE",
        help="start weights: vgg16 / caffenet (ILSVRC base, fc6/fc7 made convolutions), a "
        "registry FCN (its released weights), a .caffemodel, a previous run's folder (its "
        "newest snapshot), random (fan-in Gaussian weights, offline; --seed draws them), or none "
        "(all zero: the net cannot learn); default: what solve.py uses (vgg16, caffenet, or the "
        "released previous stage). nyud-fcn32s-color-hha: give it twice (colour, HHA)",
    )
    start.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in --out from its newest snapshot with the settings of its run.json (data "
        "roots and splits included); an option that changes the net or its optimisation is refused, a "
        "schedule option (--iterations, --score-every, ...) applies and is said",
    )
    start.add_argument("--download", action="store_true", help=f"--init NAME: {DOWNLOAD_HELP}")
    start.add_argument(
        "--cache-dir", metavar="DIR", help="weights cache (default: $FCN_PORT_CACHE, ~/.cache/fcn-port)"
    )
    roots = parser.add_argument_group("data")
    for key, option in training_data.ROOT_OPTIONS.items():
        roots.add_argument(
            option,
            dest=f"{key}_root",
            metavar="PATH",
            help=f"${training_data.ROOT_VARIABLES[key]}; {training_data.DOWNLOADS[key]}",
        )
    roots.add_argument(
        "--train-list",
        metavar="NAME",
        help="VOC models: train on <voc-root>/ImageSets/"
        "Segmentation/NAME.txt (a VOC-layout folder) instead of SBD train",
    )
    roots.add_argument(
        "--val-split",
        metavar="NAME",
        help="score another split (VOC: val2011, val2012 or a "
        "list of the VOC root; default: the official one)",
    )
    roots.add_argument(
        "--val-limit", type=RANGES["val_limit"], metavar="N", help="score only the first N validation images"
    )
    run = parser.add_argument_group("schedule (default: the official one)")
    run.add_argument("--out", metavar="DIR", help="run folder (default: runs/MODEL)")
    run.add_argument(
        "--iterations",
        type=RANGES["iterations"],
        metavar="N",
        help="stop at iteration N (default: solve.py's)",
    )
    run.add_argument(
        "--score-every", type=RANGES["score_every"], metavar="N", help="score every N iterations (0: never)"
    )
    run.add_argument(
        "--snapshot-every",
        type=RANGES["snapshot_every"],
        metavar="N",
        help="snapshot every N iterations (0: only at the end)",
    )
    run.add_argument(
        "--score-initial",
        action="store_true",
        help="score the start weights too (Caffe's test_initialization; off in the official runs); with "
        "--resume, the resumed weights",
    )
    run.add_argument(
        "--display",
        type=RANGES["display"],
        metavar="N",
        help="print and log the loss every N iterations, and at the last one (default 20; 0: the last only)",
    )
    run.add_argument("--base-lr", type=RANGES["base_lr"], metavar="LR", help="override solver base_lr")
    run.add_argument("--momentum", type=RANGES["momentum"], metavar="M", help="override solver momentum")
    run.add_argument(
        "--iter-size", type=RANGES["iter_size"], metavar="N", help="override solver iter_size (per process)"
    )
    run.add_argument(
        "--width", type=RANGES["width"], metavar="W",
        help="scale the feature layers (tests; default 1)",
    )  # fmt: skip
    run.add_argument(
        "--seed", type=RANGES["seed"], metavar="S",
        help="data order seed, and --init random's (default 1337, the official)",
    )  # fmt: skip
    run.add_argument(
        "--device", help="cpu, cuda, cuda:1 (default: cuda if available; torchrun: cuda:LOCAL_RANK)"
    )
    run.add_argument(
        "--no-progress", action="store_true", help="no progress bar (none either when stderr is no terminal)"
    )
    run.add_argument(
        "--keep-going-on-nan",
        action="store_true",
        help="train on when the loss or a parameter stops being finite, as Caffe does (default: stop, "
        "keeping the last good snapshot)",
    )
    return parser


# ----------------------------------------------------------------------------------------------


class _Aborted(KeyboardInterrupt):
    """The second Ctrl-C: stop at once, without a snapshot (the line is already printed)."""


class _Stop:
    """Ctrl-C (or SIGTERM) once: finish the iteration, snapshot, exit 130. Ctrl-C twice: abort now
    (exit 130, one line saying no snapshot was written).

    SIGTERM never aborts: ``torchrun`` answers the terminal's Ctrl-C (which its workers also get)
    with SIGTERM to every worker, and that must not cut the snapshot short."""

    def __init__(self, quiet: bool = False) -> None:
        self.requested = False
        self.quiet = quiet
        self._interrupts = 0
        self._previous: dict[int, Any] = {}

    def _handler(self, signum: int, frame: Any) -> None:
        if signum == signal.SIGINT:
            self._interrupts += 1
            if self._interrupts > 1:
                if not self.quiet:
                    print(
                        "\naborted at the second Ctrl-C: no snapshot of the iteration under way (the "
                        "run folder keeps its earlier snapshots)",
                        file=sys.stderr,
                        flush=True,
                    )
                raise _Aborted
        if self.requested:
            return
        self.requested = True
        if not self.quiet:
            print(
                "\nstopping after this iteration to write a snapshot (Ctrl-C again to abort)",
                file=sys.stderr,
                flush=True,
            )

    @contextmanager
    def installed(self):
        import threading

        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous[sig] = signal.signal(sig, self._handler)
        try:
            yield self
        finally:
            for sig, handler in self._previous.items():
                signal.signal(sig, handler)


class _Distributed:
    """This process's place among ``torchrun``'s (world 1 without it)."""

    def __init__(self, device_option: str | None) -> None:
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        local = int(os.environ.get("LOCAL_RANK", "0"))
        if device_option is None and self.world > 1 and torch.cuda.is_available():
            device_option = f"cuda:{local}"
        self.device = cli.device(device_option)
        self.dist = None
        if self.world > 1:
            import torch.distributed as dist

            if self.device.type == "cuda":
                torch.cuda.set_device(self.device)
            dist.init_process_group("nccl" if self.device.type == "cuda" else "gloo")
            self.dist = dist

    @property
    def main(self) -> bool:
        return self.rank == 0

    def mean(self, value: float) -> float:
        if self.dist is None:
            return value
        t = torch.tensor([value], dtype=torch.float64, device=self._comm_device())
        self.dist.all_reduce(t)
        return float(t) / self.world

    def any(self, flag: bool) -> bool:
        if self.dist is None:
            return flag
        t = torch.tensor([1 if flag else 0], dtype=torch.int64, device=self._comm_device())
        self.dist.all_reduce(t, op=self.dist.ReduceOp.MAX)
        return bool(t.item())

    def barrier(self) -> None:
        if self.dist is not None:
            self.dist.barrier()

    def close(self) -> None:
        if self.dist is not None:
            self.dist.destroy_process_group()

    def _comm_device(self) -> torch.device:
        return self.device if self.device.type == "cuda" else torch.device("cpu")


def _latest_snapshot(folder: Path) -> Path | None:
    found = []
    if folder.is_dir():
        for path in folder.iterdir():
            match = SNAPSHOT_RE.match(path.name)
            if match and path.with_suffix(".caffemodel").is_file():
                found.append((int(match.group(1)), path))
    return max(found)[1] if found else None


def _settings(args: argparse.Namespace, r: Recipe) -> dict:
    """Every setting of the run (``run.json``): the options given, else the recipe's defaults."""
    roots = {}
    for key in training_data.ROOT_OPTIONS:
        value = getattr(args, f"{key}_root") or os.environ.get(training_data.ROOT_VARIABLES[key])
        if value:
            roots[key] = os.path.abspath(os.path.expanduser(value))
    return {
        "model": r.model,
        "width": args.width if args.width is not None else 1.0,
        "init": args.init or [r.init],
        "base_lr": args.base_lr if args.base_lr is not None else r.base_lr,
        "momentum": args.momentum if args.momentum is not None else r.momentum,
        "iter_size": args.iter_size if args.iter_size is not None else r.iter_size,
        "seed": args.seed if args.seed is not None else training_data.SEED,
        "train_list": args.train_list,
        "val_split": args.val_split,
        "val_limit": args.val_limit,
        "iterations": args.iterations if args.iterations is not None else r.iterations,
        "score_every": args.score_every if args.score_every is not None else r.score_interval,
        "snapshot_every": (
            args.snapshot_every if args.snapshot_every is not None else (r.snapshot or r.score_interval)
        ),
        "display": args.display if args.display is not None else r.display,
        "roots": roots,
        "processes": int(os.environ.get("WORLD_SIZE", "1")),
    }


def _given(args: argparse.Namespace) -> dict:
    """The settings given on this command line (options left out are not in it)."""
    given = {key: getattr(args, key) for key in OPTIONS if getattr(args, key) is not None}
    if "init" in given:
        given["init"] = list(given["init"])
    return given


def _shown(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, list):
        return ",".join(value)
    return f"{value:g}" if isinstance(value, float) else str(value)


def _resumed_settings(args: argparse.Namespace, settings: dict, stored: dict, out: Path) -> list[str]:
    """Fold the stored run's settings into ``settings``: the net and optimisation from ``run.json``
    (one given again with another value is refused), the schedule, data roots and splits from
    ``run.json`` unless given again. Returns what this resume changes, to be said."""
    given = _given(args)
    for key in KEPT_ON_RESUME:
        if key not in stored or key == "model":
            continue
        if key in given and given[key] != stored[key]:
            raise UsageError(
                f"--resume: {OPTIONS[key]} {_shown(given[key])} differs from the run's {_shown(stored[key])} "
                f"({out / 'run.json'}): a resumed run keeps its net and optimisation; leave {OPTIONS[key]} "
                "out, or start a new run with another --out"
            )
        settings[key] = stored[key]
    processes = stored.get("processes", 1)
    if processes != settings["processes"]:
        raise UsageError(
            f"--resume: the run in {out} trained with {processes} process(es), this is "
            f"{settings['processes']}: resume it with {_launcher(processes)}, or start a new run with "
            "another --out"
        )
    changes = []
    for key in SCHEDULE:
        if key not in stored:
            continue
        if key in given and given[key] != stored[key]:
            changes.append(f"{OPTIONS[key]} {_shown(given[key])} (was {_shown(stored[key])})")
        elif key not in given:
            settings[key] = stored[key]
    stored_roots = stored.get("roots") or {}
    for key, path in stored_roots.items():
        option = getattr(args, f"{key}_root")
        if option and os.path.abspath(os.path.expanduser(option)) != path:
            changes.append(f"{training_data.ROOT_OPTIONS[key]} {settings['roots'][key]} (was {path})")
        elif not option:
            settings["roots"][key] = path
    return changes


def _launcher(processes: int) -> str:
    """How to start the command with ``processes`` processes."""
    if processes > 1:
        return f"torchrun --standalone --nproc_per_node {processes} -m reproduce.train"
    return "fcn-port train"


def _resolve_init(sources: Sequence[str]) -> list[str]:
    """A run folder given to --init means its newest snapshot's caffemodel."""
    out = []
    for source in sources:
        for part in source.split(","):
            path = Path(part).expanduser()
            if path.is_dir():
                state = _latest_snapshot(path / "snapshots") or _latest_snapshot(path)
                if state is None:
                    raise UsageError(f"--init {part}: a folder without snapshots (train_iter_N.caffemodel)")
                part = str(state.with_suffix(".caffemodel"))
            out.append(part)
    return out


def _input_shapes(model: str) -> dict[str, tuple[int, ...]]:
    shapes = {}
    for blob, (kind, _) in training_data.input_blobs(model).items():
        shapes[blob] = (1, 1 if kind == "label" or blob == "depth" else 3, 64, 64)
    return shapes


def _in_range(key: str, value: float) -> bool:
    """Whether a stored number is one the option ``key`` accepts."""
    if not math.isfinite(value):
        return False
    if isinstance(value, float) and value.is_integer() and RANGES[key].__name__ == "an integer":
        value = int(value)
    try:
        RANGES[key](str(value))
    except argparse.ArgumentTypeError:
        return False
    return True


def _stored_run(run_file: Path, settings: dict) -> dict:
    """``run.json`` of a run to resume, checked: a JSON object whose kept settings have the types
    (and finite values) of the command's own; else one line naming the field."""
    try:
        stored = json.loads(run_file.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        reason = " ".join(str(exc).split())
        raise UsageError(f"--resume: {run_file} is not a readable run.json ({reason})") from None
    if not isinstance(stored, dict):
        raise UsageError(f"--resume: {run_file} holds a {type(stored).__name__}, not the run's settings")
    for key in ("model", *KEPT_ON_RESUME, *SCHEDULE, "processes"):
        if key not in stored:
            continue
        value, default = stored[key], settings.get(key)
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if default is None:
            ok = value is None or isinstance(value, str)
        elif isinstance(default, bool):
            ok = isinstance(value, bool)
        elif isinstance(default, list):
            ok = isinstance(value, list) and all(isinstance(item, str) for item in value)
        elif isinstance(default, (int, float)):
            ok = number and math.isfinite(value) and (isinstance(default, float) or float(value).is_integer())
        else:
            ok = isinstance(value, type(default))
        if key == "model":
            ok = isinstance(value, str)
        if key in RANGES:  # the option's own range (a null val_limit: none given)
            ok = (key == "val_limit" and value is None) or (number and _in_range(key, value))
        if not ok:
            raise UsageError(
                f"--resume: {run_file}: '{key}' is {value!r}, not a setting this run could have written"
            )
    roots = stored.get("roots")
    if roots is not None and not (
        isinstance(roots, dict)
        and all(k in training_data.ROOT_OPTIONS and isinstance(v, str) for k, v in roots.items())
    ):
        raise UsageError(
            f"--resume: {run_file}: 'roots' is {roots!r}, not a setting this run could have written"
        )
    for key in (*SCHEDULE, "processes"):
        if isinstance(stored.get(key), float):
            stored[key] = int(stored[key])
    return stored


#: Whether this process has begun training (its errors may then be its own, under torchrun).
_STARTED = False


class Diverged(UsageError):
    """The loss or a parameter stopped being finite (the run stops; ``--keep-going-on-nan`` goes on)."""


def _snapshot_iteration(path: Path) -> int:
    match = SNAPSHOT_RE.match(path.name)
    return int(match.group(1)) if match else 0


def train(args: argparse.Namespace) -> int:
    """Run (or resume) the training the parsed ``args`` describe; returns the exit status."""
    r = recipe(args.model)
    out = Path(args.out or Path("runs") / r.model)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out}: is a file, not a folder: give a run folder")
    snapshots = out / "snapshots"
    settings = _settings(args, r)
    run_file = out / "run.json"
    state_path = None
    changes: list[str] = []
    if args.resume:
        if not run_file.is_file():
            raise UsageError(f"--resume: {out} holds no run (no run.json); start it without --resume")
        stored = _stored_run(run_file, settings)
        if stored.get("model") != r.model:
            raise UsageError(f"--resume: {out} trains {stored.get('model')}, not {r.model}")
        changes = _resumed_settings(args, settings, stored, out)
        if args.score_initial:
            changes.append("--score-initial scores the resumed weights first")
        unused = [o for o, v in (("--download", args.download), ("--cache-dir", args.cache_dir)) if v]
        if unused:
            changes.append(f"{' and '.join(unused)} not used (the run continues from its snapshot)")
        state_path = _latest_snapshot(snapshots)
        if state_path is None:
            raise UsageError(f"--resume: no snapshot in {snapshots} yet; start again without --resume")
        done = _snapshot_iteration(state_path)
        if done >= settings["iterations"]:
            if int(os.environ.get("RANK", "0")) == 0:
                print(
                    f"the run in {out} is already complete: its last snapshot is iteration {done} and "
                    f"--iterations is {settings['iterations']}; give a larger --iterations to train on",
                    file=sys.stderr,
                )
            return 0
    elif run_file.is_file() and _latest_snapshot(snapshots) is not None:
        raise UsageError(f"{out} already holds a run with snapshots: add --resume, or choose another --out")

    roots = training_data.DataRoots(**settings["roots"])
    # Data first: a missing root is reported before anything is built or written.
    train_set = training_data.train_dataset(r.model, roots, settings["train_list"])
    score_every = int(settings["score_every"])
    val_set = training_data.val_dataset(r.model, roots, settings["val_split"]) if score_every else None
    if val_set is not None and settings["val_limit"]:
        val_set.ids = val_set.ids[: int(settings["val_limit"])]

    fresh = not out.exists()
    dist = _Distributed(args.device)
    try:
        return _run(args, r, out, settings, state_path, changes, train_set, val_set, dist)
    except Exception as error:
        # a new run refused before its first snapshot (bad data, bad weights) leaves no run folder
        # behind; a diverged run keeps its folder for its log
        if fresh and dist.main and not isinstance(error, Diverged) and _latest_snapshot(snapshots) is None:
            shutil.rmtree(out, ignore_errors=True)
        raise
    finally:
        dist.close()


#: The FCN nets pad conv1 by 100: their blobs grow with (height + PAD) x (width + PAD).
PAD = 200


def _memory_check(model: str, train_net, device: torch.device):
    """``fits(path, width, height)`` for the loaders: refuses, from a picture's header, one the train
    net cannot run on in this device's memory. The blobs' bytes are fitted, from the net's shapes at
    two sizes, as ``a + b (h + PAD)(w + PAD)``; training holds them about twice (data and gradients)."""
    from converters.graph import builder
    from converters.graph.shapes import blob_shapes

    def total(side: int) -> float:
        shapes = {blob: (*shape[:2], side, side) for blob, shape in _input_shapes(model).items()}
        return float(sum(4 * math.prod(s) for s in blob_shapes(train_net, shapes, phase="TRAIN").values()))

    small, large = 64, 192
    t_small, t_large = total(small), total(large)
    b = (t_large - t_small) / ((large + PAD) ** 2 - (small + PAD) ** 2)
    a = t_small - b * (small + PAD) ** 2

    def fits(path: Path, width: int, height: int) -> None:
        limit = builder.memory_limit(device)
        need = 2 * (a + b * (height + PAD) * (width + PAD))
        if limit is not None and need > limit:
            raise UsageError(
                f"picture {path} ({width} x {height}) needs about {need / 2**30:.1f} GiB to train on, more "
                f"than the {limit / 2**30:.1f} GiB of memory of {device.type}: make it smaller"
            )

    return fits


def _finite(params: Sequence[torch.Tensor]) -> bool:
    """Whether every parameter value is finite (one synchronisation)."""
    if not params:
        return True
    return bool(torch.stack([torch.isfinite(p.detach()).all() for p in params]).all())


def _run(
    args,
    r: Recipe,
    out: Path,
    settings: dict,
    state_path: Path | None,
    changes: list[str],
    train_set,
    val_set,
    dist: _Distributed,
) -> int:
    width = float(settings["width"])
    iterations, display = int(settings["iterations"]), int(settings["display"])
    score_every, snapshot_every = int(settings["score_every"]), int(settings["snapshot_every"])
    train_net = net_definition(r.model, r.train_split, width=width)
    param = solver_parameter(
        r,
        base_lr=settings["base_lr"],
        momentum=settings["momentum"],
        iter_size=settings["iter_size"],
        nets=False,
        snapshot_prefix=str((out / "snapshots" / "train").resolve()),
    )
    param.set("train_net_param", train_net)
    shapes = _input_shapes(r.model)
    warning = None
    if state_path is None:
        from converters.graph.builder import build_graph

        meta = build_graph(
            train_net, phase="TRAIN", with_loss=True, input_shapes=shapes, device="meta", strict=False
        )
        start = start_weights(
            r.model,
            _resolve_init(settings["init"]),
            meta.caffe.parameter_shapes,
            cache_dir=args.cache_dir,
            download=args.download,
            width=width,
            seed=int(settings["seed"]),
        )
        init_weights, start_line = start.weights, start.summary()
        if not start.copied:
            warning = (
                f"warning: --init {','.join(settings['init'])} copies no layer: the official train nets "
                "declare no fillers, so every weight but the bilinear upsampling starts at 0 (Caffe's "
                "default) and the net cannot learn from the pictures; start from vgg16 or a caffemodel "
                "(docs/TRAINING.md, 'A first run, offline')"
            )
    else:
        init_weights, start_line = None, f"resuming from {state_path}"
    solver = load_solver(param, init_weights, device=dist.device, input_shapes=shapes)
    if state_path is not None:
        solver.restore(state_path, beside=True)  # this run folder's caffemodel, wherever it was made
    graph = solver.net
    if dist.world > 1:
        from torch.nn.parallel import DistributedDataParallel

        # forward_sync_buffers=False: the nets' buffers (if any) are the same everywhere and change
        # only with the update every process applies (broadcast_buffers is deprecated in torch 2.13)
        wrapped = DistributedDataParallel(
            graph, device_ids=[dist.device.index] if dist.device.type == "cuda" else None,
            forward_sync_buffers=False,
        )  # fmt: skip
        wrapped.caffe = graph.caffe  # the solver reads the net's Caffe facts through solver.net
        solver.net = wrapped

    log = RunLog(out, window=r.average_loss, title=f"{r.model} ({out})")
    if dist.main:
        (out / "snapshots").mkdir(parents=True, exist_ok=True)
        _write_run_files(out, r, settings, len(val_set) if val_set is not None else 0, args.score_initial)
        log.truncate(solver.iter)
        print(start_line, file=sys.stderr)
        if warning:
            print(warning, file=sys.stderr)
        if changes:
            print(f"resume: {'; '.join(changes)}", file=sys.stderr)
        scoring = (
            f"scoring {len(val_set)} every {score_every} iterations" if val_set is not None else "no scoring"
        )
        print(
            f"{r.model}: {len(train_set)} training images ({train_set.name} {train_set.split}), {scoring}; "
            f"iterations {solver.iter} -> {iterations}; {dist.world} process(es) x iter_size "
            f"{settings['iter_size']}; device {dist.device}; run folder {out}",
            file=sys.stderr,
        )
    dist.barrier()

    fits = _memory_check(r.model, train_net, dist.device)
    source = training_data.FeedSource(r.model, train_set, seed=int(settings["seed"]), fits=fits)
    scorer = (
        Scorer(r, val_set, width=width, device=dist.device, rank=dist.rank, world=dist.world, fits=fits)
        if val_set is not None
        else None
    )
    heads = [h.head for h in r.heads]
    params = dict(graph.named_parameters())
    tensors = list(params.values())

    def score() -> None:
        assert scorer is not None
        graph.eval()
        result = scorer(params)
        graph.train()
        if dist.main:
            log.write({"iter": solver.iter, "time": time.time(), "val": result})
            log.plot(heads[0])
            metrics = ", ".join(
                f"{h}: "
                + " ".join(f"{k} {result[h][k]:.2f}" for k in ("pixel_acc", "mean_acc", "mean_iu", "fw_iu"))
                for h in heads
            )
            _say(bar, f"iteration {solver.iter}: val loss {result['loss']:.6g}; {metrics}")

    last_good = state_path.with_suffix(".caffemodel") if state_path is not None else None

    def snapshot() -> None:
        nonlocal last_good
        if dist.main:
            model_path, _ = solver.snapshot()
            last_good = Path(model_path)
            _say(bar, f"iteration {solver.iter}: snapshot {model_path}")
        dist.barrier()

    def show_loss(loss: float, smoothed: float) -> None:
        nonlocal tick, tick_iter
        now = time.perf_counter()
        speed = (solver.iter - tick_iter) / (now - tick) if now > tick else 0.0
        tick, tick_iter = now, solver.iter
        rate = solver.learning_rate
        log.write(
            {"iter": solver.iter, "loss": loss, "smoothed_loss": smoothed, "lr": rate, "it_per_s": speed,
             "time": time.time()}
        )  # fmt: skip
        _say(
            bar,
            f"iteration {solver.iter}: loss {loss:.6g} (smoothed {smoothed:.6g}), lr {rate:.3g}, "
            f"{speed:.3g} it/s",
        )

    from tqdm import tqdm

    bar = tqdm(
        total=iterations,
        initial=min(solver.iter, iterations),
        unit="it",
        file=sys.stderr,
        dynamic_ncols=True,
        disable=True if args.no_progress or not dist.main else None,  # None: only on a terminal
        smoothing=0.05,
        desc=r.model,
    )
    stop = _Stop(quiet=not dist.main)
    global _STARTED
    _STARTED = True
    last_snapshot = solver.iter
    tick, tick_iter = time.perf_counter(), solver.iter
    shown = solver.iter
    last: tuple[float, float] | None = None
    status = 0
    try:
        with stop.installed():
            if scorer is not None and args.score_initial:
                score()
            while solver.iter < iterations:
                feeds = training_data.pass_feeds(
                    source,
                    solver.iter,
                    dist.rank,
                    dist.world,
                    int(settings["iter_size"]),
                    seed=int(settings["seed"]),
                )
                loss = dist.mean(solver.step(feeds))
                smoothed = log.add_loss(loss)
                last = (loss, smoothed)
                bar.update(1)
                bar.set_postfix(loss=f"{smoothed:.4g}", refresh=False)
                if not args.keep_going_on_nan and not (math.isfinite(loss) and _finite(tensors)):
                    if dist.main:
                        show_loss(loss, smoothed)
                    finite = math.isfinite(loss)
                    what = "a parameter is not finite" if finite else f"the loss is {loss}"
                    kept = f"the last good snapshot is {last_good}" if last_good else "no snapshot yet"
                    raise Diverged(
                        f"iteration {solver.iter}: {what}: training diverged (a lower --base-lr?); stopped "
                        f"without writing it, {kept} (--keep-going-on-nan trains on, as Caffe would)"
                    )
                if dist.main and display and solver.iter % display == 0:
                    show_loss(loss, smoothed)
                    shown = solver.iter
                if scorer is not None and score_every and solver.iter % score_every == 0:
                    score()
                if snapshot_every and solver.iter % snapshot_every == 0:
                    snapshot()
                    last_snapshot = solver.iter
                if dist.any(stop.requested):
                    status = cli.EXIT_INTERRUPTED
                    break
            if dist.main and last is not None and shown != solver.iter:
                show_loss(*last)  # the last iteration's loss, whatever --display
            if solver.iter != last_snapshot:
                snapshot()  # Caffe's snapshot_after_train, and the Ctrl-C snapshot
            if status == 0 and scorer is not None and score_every and solver.iter % score_every:
                score()
    finally:
        bar.close()
        source.close()
    if dist.main:
        if status == cli.EXIT_INTERRUPTED:
            print(
                f"interrupted at iteration {solver.iter}: resume with: {_launcher(dist.world)} {r.model} "
                f"--resume --out {shlex.quote(str(out))}",
                file=sys.stderr,
            )
        else:
            log.plot(heads[0])
            print(f"done: iteration {solver.iter}; log {log.path}, plot {log.plot_path}", file=sys.stderr)
    return status


def _say(bar, message: str) -> None:
    if bar.disable:
        print(message, file=sys.stderr, flush=True)
    else:
        bar.write(message, file=sys.stderr)


def run_solver_parameter(r: Recipe, settings: dict, val_images: int, score_initial: bool = False):
    """The ``solver.prototxt`` of a run: the official file's form and fields with the run's own
    values (rate, momentum, iter_size, iterations, display, snapshots, and the scoring as Caffe's
    tests: ``test_iter`` = the validation images, ``test_interval`` = ``--score-every``)."""
    param = solver_parameter(
        r, base_lr=settings["base_lr"], momentum=settings["momentum"], iter_size=settings["iter_size"],
        snapshot_prefix="snapshots/train",
    )  # fmt: skip
    score_every = int(settings["score_every"])
    if val_images and score_every:
        param.set("test_iter", [val_images])
        param.set("test_interval", score_every)
    else:
        for field in ("test_net", "test_iter", "test_interval"):
            param.remove(field)
    param.set("display", int(settings["display"]))
    param.set("max_iter", int(settings["iterations"]))
    param.set("snapshot", int(settings["snapshot_every"]))
    param.set("snapshot_prefix", "snapshots/train")
    param.set("test_initialization", bool(score_initial and val_images and score_every))
    return param


def _write_run_files(out: Path, r: Recipe, settings: dict, val_images: int, score_initial: bool) -> None:
    """``solver.prototxt`` (the run's settings in the official file's form, for Caffe) +
    ``train.prototxt`` + ``val.prototxt`` and ``run.json``."""
    width = float(settings["width"])
    with atomic_write(out / "solver.prototxt", "w") as f:
        f.write(format_message(run_solver_parameter(r, settings, val_images, score_initial)))
    write_prototxt(net_definition(r.model, r.train_split, width=width), out / f"{r.train_split}.prototxt")
    write_prototxt(net_definition(r.model, r.val_split, width=width), out / f"{r.val_split}.prototxt")
    with atomic_write(out / "run.json", "w") as f:
        json.dump(settings, f, indent=2)
        f.write("\n")


# how long a process other than the first waits, after an error every process meets, for torchrun
# to stop it as the first process fails saying that error
_QUIET_RANK_WAIT_S = 60.0


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` and train; the exit status (0, 2 on bad input, 130 when interrupted)."""

    def body() -> int:
        try:
            args = build_parser().parse_args(argv)
            return train(args)
        except KeyboardInterrupt as interrupt:
            if not isinstance(interrupt, _Aborted):  # before the run began: nothing was written
                print("interrupted before training began", file=sys.stderr)
            raise
        except Exception as error:
            # under torchrun an error every process meets alike (a setting, the start, a divergence
            # of the averaged loss) is said once, by the first process; one met by a process alone
            # (its own sample) is said by that process
            alike = isinstance(error, Diverged) or not _STARTED
            if int(os.environ.get("RANK", "0")) > 0 and alike and cli.is_user_error(error):
                # torchrun stops every process once one fails: this one waits for that, so the
                # first process, which meets the same error, is not stopped before it says it
                time.sleep(_QUIET_RANK_WAIT_S)
                return cli.EXIT_BAD_INPUT
            raise

    return cli.run(body)


if __name__ == "__main__":
    sys.exit(main())
