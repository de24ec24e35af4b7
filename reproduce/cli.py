"""``fcn-port COMMAND ...``: one entry point for every command (also ``python -m reproduce.cli``
and ``python -m converters``). Each command is the module's own ``python -m`` command line:

    fcn-port convert voc-fcn8s                   = python -m converters.caffe2torch voc-fcn8s
    fcn-port eval voc --model voc-fcn8s ...      = python -m eval.voc --model voc-fcn8s ...
    fcn-port segment --model voc-fcn8s photos/ -o out/
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import inspect
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass

EXIT_OK, EXIT_BAD_INPUT = 0, 2


@dataclass(frozen=True)
class Command:
    """One ``fcn-port`` command: the modules that may implement it (first importable wins)."""

    name: str
    modules: tuple[str, ...]
    summary: str


COMMANDS: tuple[Command, ...] = (
    Command("convert", ("converters.caffe2torch",), "convert a Caffe model (or registry name) to PyTorch"),
    Command("inspect", ("converters.inspect",), "layers, blob shapes and parameter counts of a Caffe file"),
    Command("weights", ("weights.__main__",), "list, show, fetch, verify the official weights (the cache)"),
    Command("eval", (), "evaluate a model on a dataset: eval DATASET --model ... (datasets below)"),
    Command("timing", ("eval.timing",), "forward-pass timings beside the paper's"),
    Command("segment", ("reproduce.segment",), "segment your images: label PNGs, overlays, scores, legends"),
    Command("demo", ("reproduce.demo",), "segment the official demo image, compare with Caffe's output"),
    Command("train", ("reproduce.train",), "train an FCN model by the paper's recipe (train MODEL ...)"),
    Command("solve", ("converters.train.__main__",), "run a Caffe solver.prototxt (HDF5Data/ImageData nets)"),
)

#: ``fcn-port eval DATASET``: the evaluator of each dataset.
EVAL_DATASETS: dict[str, str] = {
    "voc": "eval.voc",
    "sbd": "eval.sbd",
    "context": "eval.context",
    "nyud": "eval.nyud",
    "siftflow": "eval.siftflow",
}


def _find(modules: Sequence[str]) -> str | None:
    """The first of ``modules`` this installation has, found without importing it (a package's
    ``__main__`` without importing the package, which may load torch)."""
    for name in modules:
        package, _, leaf = name.rpartition(".")
        try:
            if leaf == "__main__":
                spec = importlib.util.find_spec(package)
                folders = (spec.submodule_search_locations or []) if spec is not None else []
                if any(os.path.isfile(os.path.join(folder, "__main__.py")) for folder in folders):
                    return name
            elif importlib.util.find_spec(name) is not None:
                return name
        except (ImportError, ValueError):  # a parent package that does not exist
            continue
    return None


def available(command: Command) -> bool:
    """Whether this installation has the module behind ``command``."""
    return command.name == "eval" or _find(command.modules) is not None


def command_list(prog: str = "fcn-port") -> str:
    """The help text: every command, what it does, and its ``python -m`` equivalent."""
    width = max(len(c.name) for c in COMMANDS)
    lines = [f"usage: {prog} COMMAND [ARGS...]   ({prog} COMMAND --help: its options)", "", "commands:"]
    for command in COMMANDS:
        module = _find(command.modules)
        if command.name == "eval":
            where = "python -m eval.DATASET"
        elif module is None:
            where = "not available in this installation"
        else:
            where = f"python -m {module.removesuffix('.__main__')}"
        lines.append(f"  {command.name:<{width}}  {command.summary}  [{where}]")
    lines += ["", f"eval datasets: {', '.join(EVAL_DATASETS)}"
              f"  (e.g. {prog} eval voc --model voc-fcn8s --voc-root PATH)"]
    return "\n".join(lines)


def _error(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return EXIT_BAD_INPUT


def resolve(argv: Sequence[str]) -> tuple[Callable[[list[str]], int], list[str]] | str:
    """The ``main`` function and arguments ``argv`` asks for, or a one-line error message."""
    name, rest = argv[0], list(argv[1:])
    command = next((c for c in COMMANDS if c.name == name), None)
    if command is None:
        return f"unknown command {name!r}; choose from {', '.join(c.name for c in COMMANDS)}"
    if command.name == "eval":
        if rest[:1] in (["-h"], ["--help"]):
            return _eval_help, []
        if not rest or rest[0].startswith("-"):
            return f"eval needs a dataset first: fcn-port eval {{{','.join(EVAL_DATASETS)}}} --model ..."
        if rest[0] not in EVAL_DATASETS:
            return f"unknown dataset {rest[0]!r} for eval; choose from {', '.join(EVAL_DATASETS)}"
        module = EVAL_DATASETS[rest[0]]
        rest = rest[1:]
    else:
        found = _find(command.modules)
        if found is None:
            modules = " or ".join(command.modules)
            return f"{command.name} is not available in this installation (no module {modules})"
        module = found
    main = getattr(importlib.import_module(module), "main", None)
    if main is None:
        return f"{command.name} is not available in this installation ({module} has no command line)"
    return main, rest


def _print(text: str) -> int:
    print(text)
    return EXIT_OK


def _eval_help(_: list[str]) -> int:
    return _print(
        "usage: fcn-port eval DATASET --model MODEL ... (fcn-port eval DATASET --help: its options)\n"
        f"datasets: {', '.join(f'{k} (python -m {m})' for k, m in EVAL_DATASETS.items())}"
    )


def main(argv: Sequence[str] | None = None, prog: str = "fcn-port") -> int:
    """Run ``fcn-port ARGS``: the command's own exit status; 0 for the command list; 2 with one
    ``error:`` line for an unknown command (Ctrl-C and closed pipes as :mod:`converters.cli`)."""
    try:  # the first import loads torch: a Ctrl-C during it exits as one during the command would
        from converters.cli import EXIT_INTERRUPTED, run
    except KeyboardInterrupt:
        return 130  # converters.cli.EXIT_INTERRUPTED, which is not imported yet
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        return run(lambda: _dispatch(argv, prog))
    except KeyboardInterrupt:  # between run's own handlers (a second Ctrl-C while it reports)
        return EXIT_INTERRUPTED


def _dispatch(argv: list[str], prog: str) -> int | None:
    if not argv or argv[0] in ("-h", "--help", "help"):
        return _print(command_list(prog))
    found = resolve(argv)
    if isinstance(found, str):
        return _error(found)
    function, rest = found
    if "prog" in inspect.signature(function).parameters:  # its usage lines then say fcn-port
        function = functools.partial(function, prog=f"{prog} {argv[0]}")
    return function(rest)


if __name__ == "__main__":
    sys.exit(main())
