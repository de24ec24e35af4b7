"""Shared code of the table scripts: result files, what is missing and how to get it, Markdown.

Measured numbers come from JSON files in the results folder (``--results``, else
``$FCN_PORT_RESULTS``, else ``./results``), written by the evaluation and timing CLIs:

- ``<model>-<dataset>-<split>.json``: ``python -m eval.<dataset> --model <model> ... --json FILE``;
- ``timing-<model>-<device>.json``: ``python -m eval.timing --model <model> --device <device> --json FILE``.

With ``--run`` a table script makes the missing files itself where it can: it evaluates when the
weights are cached and the dataset's folder is named by its environment variable
(``FCN_PORT_VOC2011`` ...), and times the nets (random weights; the time does not depend on them).
Whatever stays missing is listed as ``missing: ...`` lines that say how to get it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from converters import cli

RESULTS_ENV = "FCN_PORT_RESULTS"
METRICS = ("pixel_acc", "mean_acc", "mean_iu", "fw_iu")
METRIC_TITLES = {"pixel_acc": "pixel acc", "mean_acc": "mean acc", "mean_iu": "mean IU", "fw_iu": "f.w. IU"}


@dataclass(frozen=True)
class DatasetSpec:
    """How to evaluate on one dataset split: the eval module, its folder options and their variables."""

    key: str  # the dataset key in result files and weights.published ("voc2011")
    split: str  # the split as the eval CLI names it
    module: str  # python -m <module>
    roots: tuple[tuple[str, str], ...]  # (CLI option, environment variable) per dataset folder
    how_to_get: str  # where the data comes from


VOC2011_SEG11VALID = DatasetSpec(
    "voc2011", "seg11valid", "eval.voc", (("--voc-root", "FCN_PORT_VOC2011"),),
    "PASCAL VOC 2011 (VOCtrainval_25-May-2011.tar from host.robots.ox.ac.uk/pascal/VOC/voc2011/)",
)
NYUD_TEST = DatasetSpec(
    "nyud", "test", "eval.nyud", (("--nyud-root", "FCN_PORT_NYUD"),),
    "the FCN authors' NYUDv2 folder (images, 40-class labels, HHA; see eval.nyud --help)",
)
SIFTFLOW_TEST = DatasetSpec(
    "siftflow", "test", "eval.siftflow", (("--siftflow-root", "FCN_PORT_SIFTFLOW"),),
    "the SIFT Flow dataset folder (see eval.siftflow --help)",
)
CONTEXT_VAL = DatasetSpec(
    "pascalcontext", "val", "eval.context",
    (("--voc-root", "FCN_PORT_VOC2010"), ("--context-root", "FCN_PORT_CONTEXT")),
    "PASCAL VOC 2010 images and the PASCAL-Context annotations (trainval/*.mat)",
)


def results_dir(option: str | None = None) -> Path:
    """The results folder: ``option``, else ``$FCN_PORT_RESULTS``, else ``./results``."""
    return Path(option or os.environ.get(RESULTS_ENV) or "results")


def eval_result_path(results: Path, model: str, dataset: DatasetSpec) -> Path:
    """Where the evaluation of ``model`` on ``dataset`` is stored."""
    return results / f"{model}-{dataset.key}-{dataset.split}.json"


def timing_result_path(results: Path, model: str, device: str) -> Path:
    """Where the timing of ``model`` on ``device`` (``cpu``/``cuda``) is stored."""
    return results / f"timing-{model}-{device}.json"


def read_json(path: Path) -> dict[str, Any] | None:
    """The JSON object in ``path``, or ``None`` if there is no such file; ``ValueError`` if unreadable."""
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"cannot read result file {path}: {exc}") from None
    if not isinstance(data, dict):
        raise ValueError(f"result file {path} does not hold a JSON object")
    return data


@dataclass(frozen=True)
class MeasuredScores:
    """Four metrics (percent) of one evaluation, with how many images it covered."""

    metrics: dict[str, float | None]
    images: int | None
    limited: bool
    path: Path


def read_scores(path: Path, head: str = "semantic") -> MeasuredScores | None:
    """The metrics of label head ``head`` in an evaluation result file, or ``None`` if absent."""
    data = read_json(path)
    if data is None:
        return None
    heads = data.get("heads") or {}
    if head not in heads:
        raise ValueError(f"result file {path} has no {head!r} scores (it has {', '.join(heads) or 'none'})")
    values = {m: heads[head].get(m) for m in METRICS}
    return MeasuredScores(values, data.get("images"), bool(data.get("limited")), path)


def weights_cached(model: str) -> bool:
    """Whether the released weights of ``model`` are in the weights cache (no network)."""
    try:
        import weights

        return weights.cached_path(model).is_file()
    except Exception:  # unknown or unreleased model, or no registry
        return False


def weights_hint(model: str) -> str:
    """How to get the weights of ``model``, in a few words."""
    try:
        import weights

        record = weights.get(model)
    except Exception:
        return f"no registry entry for {model}"
    if not record.released:
        return f"no weights were released for {model}"
    return f"`python -m weights fetch {model}` ({record.filename} from {record.url})"


def eval_command(model: str, dataset: DatasetSpec, output: Path) -> str:
    """The command line that evaluates ``model`` on ``dataset`` into ``output``."""
    roots = " ".join(f"{option} ${env}" for option, env in dataset.roots)
    return f"python -m {dataset.module} --model {model} --split {dataset.split} {roots} --json {output}"


def dataset_roots(dataset: DatasetSpec) -> list[tuple[str, str]] | None:
    """(option, folder) for each of the dataset's folders, or ``None`` unless all variables are set."""
    values = [(option, os.environ.get(env, "")) for option, env in dataset.roots]
    return values if all(v for _, v in values) else None


@dataclass
class Report:
    """Markdown being built, with the list of what is missing."""

    lines: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, *lines: str) -> None:
        self.lines.extend(lines)

    def need(self, what: str) -> None:
        if what not in self.missing:
            self.missing.append(what)

    def note(self, text: str) -> None:
        if text not in self.notes:
            self.notes.append(text)

    def render(self) -> str:
        out = list(self.lines)
        if self.notes:
            out += [""] + [f"- {n}" for n in self.notes]
        if self.missing:
            out += [""] + [f"missing: {m}" for m in self.missing]
        return "\n".join(out).rstrip() + "\n"


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """A Markdown table as lines."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return lines


def fmt(value: float | int | None, digits: int = 1, unit: str = "") -> str:
    """A number for a table cell; ``-`` for none or NaN."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.{digits}f}{unit}"


def measured_scores(
    report: Report, results: Path, model: str, dataset: DatasetSpec, *, run: bool, head: str = "semantic"
) -> MeasuredScores | None:
    """The stored evaluation of ``model`` on ``dataset``; evaluated first when ``run`` allows and
    the weights and data are present. Records in ``report`` what is missing and how to get it."""
    path = eval_result_path(results, model, dataset)
    scores = read_scores(path, head)
    roots = dataset_roots(dataset)
    if scores is None and run and roots and weights_cached(model):
        run_eval(model, dataset, roots, path)
        scores = read_scores(path, head)
    if scores is None:
        reasons = []
        if not weights_cached(model):
            reasons.append(f"weights: {weights_hint(model)}")
        if roots is None:
            names = " and ".join(env for _, env in dataset.roots)
            reasons.append(f"data: set {names} to {dataset.how_to_get}")
        because = f" ({'; '.join(reasons)})" if reasons else ""
        report.need(
            f"{model} on {dataset.key} {dataset.split}: no {path}; "
            f"run `{eval_command(model, dataset, path)}` or this script with --run{because}"
        )
    elif scores.limited:
        report.note(f"{model}: {path} covers only {scores.images} images (evaluated with --limit)")
    return scores


def run_command(command: Sequence[str], what: str, ok: Sequence[int] = (0,)) -> None:
    """Run a CLI of the project (``command[1:]`` after the interpreter) as a child process, its
    progress bars and messages shown on our stderr as they come; ``ValueError`` naming ``what`` and
    the child's last error line when it exits with a code outside ``ok``."""
    print(f"running: {' '.join(command[1:])}", file=sys.stderr, flush=True)
    child = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert child.stderr is not None
    tail = b""
    try:
        while True:
            chunk = os.read(child.stderr.fileno(), 1 << 14)
            if not chunk:
                break
            tail = (tail + chunk)[-4096:]
            with contextlib.suppress(OSError, ValueError):
                _pass_through(chunk)
        code = child.wait()
    except BaseException:  # Ctrl-C reaches the child too; never leave it running
        child.kill()
        child.wait()
        raise
    finally:
        child.stderr.close()
    if code not in ok:
        text = tail.decode(errors="replace").replace("\r", "\n")
        lines = [line for line in text.splitlines() if line.strip()]
        errors = [line for line in lines if line.startswith("error:")]
        last = (errors or lines or [f"exit {code}"])[-1]
        raise ValueError(f"{what} failed: {last.removeprefix('error: ')}")


def _pass_through(chunk: bytes) -> None:
    """Show a child's stderr bytes on ours (text streams without a byte buffer get them decoded)."""
    buffer = getattr(sys.stderr, "buffer", None)
    if buffer is not None:
        sys.stderr.flush()
        buffer.write(chunk)
        buffer.flush()
    else:
        sys.stderr.write(chunk.decode(errors="replace"))
        sys.stderr.flush()


def run_eval(model: str, dataset: DatasetSpec, roots: list[tuple[str, str]], output: Path) -> None:
    """Evaluate ``model`` on ``dataset`` with the eval CLI (progress shown), writing ``output``;
    ``ValueError`` on failure."""
    output.parent.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", dataset.module, "--model", model, "--split", dataset.split]
    for option, folder in roots:
        command += [option, folder]
    command += ["--json", str(output)]
    run_command(command, f"evaluating {model}", ok=(0, 1))  # 1: evaluated, but off the published figures


def run_timing(model: str, device: str, output: Path) -> None:
    """Time ``model`` at 500x500 on ``device`` with ``eval.timing`` (progress shown), writing ``output``."""
    output.parent.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "eval.timing", "--model", model, "--device", device]
    command += ["--json", str(output)]
    run_command(command, f"timing {model}")


def base_parser(prog: str, description: str) -> argparse.ArgumentParser:
    """The options every table script shares: --results, --run."""
    parser = cli.Parser(prog=prog, description=description)
    parser.add_argument(
        "--results", default=None,
        help=f"folder of result JSON files (default: ${RESULTS_ENV}, else ./results)",
    )
    parser.add_argument(
        "--run", action="store_true",
        help="compute missing results where weights and data are present (can take long; shows progress)",
    )
    return parser


def table_main(build: Any, parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> int:
    """A table script's whole run (:func:`converters.cli.run`): parse ``argv``, print
    ``build(args).render()``; one ``error:`` line and 2 on a user error, 130 on Ctrl-C."""

    def body() -> int:
        text = build(parser.parse_args(argv)).render()
        sys.stdout.write(text)
        return 0

    return cli.run(body)


@dataclass(frozen=True)
class ExtraColumn:
    """A column beyond the four metrics: a published ``extra`` figure and where we measure it."""

    title: str
    published_key: str  # key in PublishedMetrics.extra
    head: str  # label head in the eval result
    metric: str  # metric of that head


def paper_vs_measured(
    report: Report,
    rows: Sequence[Any],
    dataset: DatasetSpec,
    results: Path,
    *,
    run: bool,
    extra: Sequence[ExtraColumn] = (),
) -> list[str]:
    """Markdown lines: each published row (``weights.published`` rows), then, for released models,
    the measured figures with their differences from the paper's."""
    table: list[list[str]] = []
    for row in rows:
        paper_values = [row.get(m) for m in METRICS] + [row.get(c.published_key) for c in extra]
        source = "paper" if row.weights == "paper" else f"published ({row.weights})"
        table.append([row.method, source, *(fmt(v) for v in paper_values), ""])
        if row.weights == "baseline":
            continue
        if not weights_hint(row.model).startswith("`"):
            report.note(f"{row.method}: {row.note or weights_hint(row.model)}; nothing to measure")
            continue
        measured = measured_scores(report, results, row.model, dataset, run=run)
        if measured is None:
            continue
        values: list[float | None] = [measured.metrics.get(m) for m in METRICS]
        for column in extra:
            other = read_scores(measured.path, column.head) if column.head != "semantic" else measured
            values.append(other.metrics.get(column.metric) if other else None)
        titles = list(METRICS) + [c.title for c in extra]
        deltas = [
            f"{t}: {v - p:+.2f}"
            for t, v, p in zip(titles, values, paper_values, strict=True)
            if v is not None and p is not None
        ]
        table.append([row.method, f"measured ({row.model})", *(fmt(v, 2) for v in values), ", ".join(deltas)])
    headers = ["method", "source", *(METRIC_TITLES[m] for m in METRICS), *(c.title for c in extra)]
    return markdown_table([*headers, "delta vs paper"], table)


def dataset_table_main(
    prog: str, title: str, intro: str, rows_of: Any, dataset: DatasetSpec,
    extra: Sequence[ExtraColumn] = (), argv: Sequence[str] | None = None,
) -> int:
    """The whole CLI of a one-dataset table script (``reproduce.nyud`` ...)."""
    parser = base_parser(prog, f"{title}: paper vs measured, as Markdown.")

    def build(args: argparse.Namespace) -> Report:
        report = Report()
        report.add(f"## {title} (paper vs measured)", "", intro, "")
        report.add(*paper_vs_measured(
            report, rows_of(), dataset, results_dir(args.results), run=args.run, extra=extra
        ))
        return report

    return table_main(build, parser, argv)
