"""Fuzz the Caffe readers and ``load_caffe``: ``python tools/fuzz.py TARGET [options]``.

Targets: ``text`` (read_prototxt + text round trip), ``binary`` (read_net, read_weights, inspect
on a caffemodel), ``hdf5`` (read_weights, inspect on a .caffemodel.h5), ``load`` (load_caffe with
random or stored weights and a forward), ``solver`` (load_solver of a mutated solver over a tiny
train net and three iterations), ``state`` (a mutated binary or HDF5 solverstate restored into its
solver, then one iteration), ``params`` (a layer fixture net, fork layers included, whose parameter
values are poisoned with NaN, inf, 0, negative or huge numbers, loaded and run), ``solvedata``
(``python -m converters.train`` over a train net whose HDF5Data or ImageData source list, HDF5
files, images and labels are odd, damaged, huge in declaration, FIFOs or folders), ``vocdata``
(``fcn-port train``'s VOC-layout split list, pictures and label images, odd or damaged),
``runjson`` (``fcn-port train --resume`` over a finished run whose ``run.json`` is mutated), or
``all``.
See tests/fuzz/harness.py for the property and tools/README.md for how to run it long.

Engines: ``mutate`` (default; the seeded structure-aware mutator, each case in a memory-capped
worker process with a time limit) and ``atheris`` (coverage-guided libFuzzer with the same
mutator as its custom mutator; needs ``pip install atheris``; arguments after ``--`` go to
libFuzzer, e.g. ``-max_total_time=3600 -rss_limit_mb=4096 -timeout=20``).

Exit status: 0 when no finding, 1 when there are findings (written under --out), 2 on bad usage.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO / "tests"), str(REPO)]

from fuzz import harness  # noqa: E402


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        print(f"error: {message} (see --help)", file=sys.stderr)
        raise SystemExit(2)


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``tools/fuzz.py``."""
    parser = _Parser(
        prog="python tools/fuzz.py",
        description="Fuzz the Caffe readers and load_caffe; every finding is saved as a reproducer.",
    )
    parser.add_argument("target", choices=[*harness.TARGETS, "all"], help="what to fuzz")
    parser.add_argument("--engine", choices=["mutate", "atheris"], default="mutate")
    parser.add_argument("--seed", type=int, default=0, help="seed of the mutator (default 0)")
    parser.add_argument("--cases", type=int, default=None, help="stop after this many cases")
    parser.add_argument("--seconds", type=float, default=None, help="stop after this long (per target)")
    parser.add_argument("--memory-mb", type=int, default=3072, help="address space a case may add")
    parser.add_argument("--out", type=Path, default=Path("fuzz-findings"), help="where reproducers go")
    parser.add_argument("--replay", type=Path, default=None, help="run one saved case and show the result")
    parser.epilog = "Arguments after -- go to libFuzzer (--engine atheris)."
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the fuzzer; 0 without findings, 1 with findings."""
    argv = list(sys.argv[1:] if argv is None else argv)
    libfuzzer_args = argv[argv.index("--") + 1 :] if "--" in argv else []
    args = build_parser().parse_args(argv[: argv.index("--")] if "--" in argv else argv)
    args.libfuzzer_args = libfuzzer_args
    targets = list(harness.TARGETS) if args.target == "all" else [args.target]
    if args.replay is not None:
        if len(targets) != 1:
            build_parser().error("--replay needs one target")
        result = harness.run_in_process(targets[0], args.replay.read_bytes())
        print(result)
        return 0 if result["status"] != "finding" else 1
    if args.engine == "atheris":
        if len(targets) != 1:
            build_parser().error("--engine atheris runs one target")
        return _atheris(targets[0], args)
    if args.cases is None and args.seconds is None:
        args.seconds = 60.0
    found = 0
    for target in targets:
        report = harness.fuzz(
            target, seed=args.seed, max_cases=args.cases, seconds=args.seconds,
            memory_mb=args.memory_mb, save_to=args.out,
        )  # fmt: skip
        print(report.summary(), flush=True)
        found += len(report.findings)
    if found:
        print(f"{found} finding(s); reproducers in {args.out}/ (replay: --replay FILE)")
    return 1 if found else 0


def _atheris(target: str, args: argparse.Namespace) -> int:
    try:
        import atheris  # type: ignore[import-not-found]
    except ImportError:
        print("error: atheris is not installed (pip install atheris); or --engine mutate", file=sys.stderr)
        return 2
    import resource

    # Coverage of our code guides libFuzzer. atheris 2.3.0 miscompiles binary.py's varint loop on
    # CPython 3.11 (a TypeError that never happens uninstrumented), so that module runs as is.
    with atheris.instrument_imports(include=["converters"], exclude=["converters.caffe.binary"]):
        import converters  # noqa: F401
        import converters.inspect  # noqa: F401

    stream = harness.cases(target, args.seed)
    corpus = [next(stream) for _ in range(64)]
    directory = tempfile.mkdtemp(prefix=f"fuzz-{target}-")
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))

    def test_one_input(data: bytes) -> None:
        result = harness.run_in_process(target, data)
        if result["status"] == "finding":
            problem, error, where = result["problem"], result["error"], result["where"]
            raise RuntimeError(f"{problem}: {error}: {result['message']} [{where}]")

    def custom_mutator(data: bytes, max_size: int, seed: int) -> bytes:
        rng = random.Random(seed)
        if rng.random() < 0.5 or not data:
            return rng.choice(corpus)[:max_size]
        if target == "text":
            return harness.mutate_text(rng, data, corpus)[:max_size]
        if target == "load":
            return (data[:1] + harness.mutate_text(rng, data[1:], corpus, gentle=True))[:max_size]
        if target == "hdf5" and rng.random() < 0.5:
            return harness.make_hdf5(rng, data)[:max_size]
        return harness.mutate_binary(rng, data, corpus)[:max_size]

    args.out.mkdir(parents=True, exist_ok=True)
    libfuzzer = [sys.argv[0], f"-artifact_prefix={args.out}/{target}-", f"-seed={args.seed}"]
    libfuzzer += ["-max_len=65536", directory]
    for i, data in enumerate(corpus):
        (Path(directory) / f"seed-{i}").write_bytes(data)
    atheris.Setup(libfuzzer + list(args.libfuzzer_args), test_one_input, custom_mutator=custom_mutator)
    atheris.Fuzz()
    return 0


if __name__ == "__main__":
    sys.exit(main())
