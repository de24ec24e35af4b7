"""``python -m reproduce.table1``: CVPR 2015 Table 1 (backbones as FCNs), paper beside measured.

The static columns (conv layers, parameters, receptive field, max stride) are computed from each
net's definition and built module (see :mod:`eval.timing`); mean IU comes from stored evaluations
of the released weights on seg11valid, forward times from stored timings (``--run`` makes those
that can be made here). The paper's figures come from ``weights.published``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from . import tables
from .tables import VOC2011_SEG11VALID, Report, fmt, markdown_table


def _definition(model: str, report: Report) -> Any | None:
    import weights

    try:
        record = weights.get(model)
    except ValueError:
        report.need(f"{model}: no registry entry (no weights were released for it)")
        return None
    return record.net_definition("deploy")


def static_columns(model: str, report: Report, build: bool = True) -> Any | None:
    """Table 1's static columns of ``model`` (built with random weights when ``build``), or ``None``."""
    from eval.timing import static_columns as compute

    definition = _definition(model, report)
    if definition is None:
        return None
    module = None
    if build:
        from converters import load_caffe

        module = load_caffe(definition, None)
    columns = compute(definition, module)
    del module
    return columns


def measured_time(report: Report, results: Path, model: str, *, run: bool) -> tuple[str, dict | None]:
    """A table cell with the stored forward time of ``model`` (GPU preferred), and its data."""
    import torch

    for device in ("cuda", "cpu"):
        data = tables.read_json(tables.timing_result_path(results, model, device))
        if data is not None:
            break
    else:
        device = "cuda" if torch.cuda.is_available() else "cpu"
        path = tables.timing_result_path(results, model, device)
        if run:
            tables.run_timing(model, device, path)
            data = tables.read_json(path)
        if data is None:
            report.need(
                f"forward time of {model}: no {path}; run `python -m eval.timing --model {model} "
                f"--device {device} --json {path}` or this script with --run"
            )
            return "-", None
    fp32 = next((r for r in data["rows"] if r["variant"] == "fp32"), data["rows"][0])
    return f"{fmt(fp32['median_ms'], 0)} ms ({data['device_name']})", fp32


def build(args: argparse.Namespace) -> Report:
    from weights import published

    results = tables.results_dir(args.results)
    report = Report()
    report.add(
        "## CVPR 2015 Table 1: backbones cast as FCN-32s (paper vs measured)",
        "",
        "Paper: PASCAL VOC 2011 val, the paper's models; forward time at 500x500 on a Tesla K40c, "
        "20 trials. Measured: the released weights on seg11valid (`eval.voc`); forward time of the "
        "same net at 500x500 here (median of >= 20 synchronised passes, `eval.timing`). Static columns: "
        "paper / computed from the definition and built module.",
        "",
    )
    rows = []
    for entry in (r for r in published.TABLE1 if r.split == "val"):
        model = entry.model
        extra = dict(entry.extra)
        released = published.lookup(model, "voc2011", "seg11valid", "released")
        have_model = tables.weights_hint(model).startswith("`")
        cols = static_columns(model, report, build=not args.no_build) if have_model else None
        if not have_model:
            report.note(f"{entry.method}: {entry.note or tables.weights_hint(model)}")
        measured = None
        time_cell, fp32 = "-", None
        if have_model:
            measured = tables.measured_scores(report, results, model, VOC2011_SEG11VALID, run=args.run)
        if cols is not None:
            time_cell, fp32 = measured_time(report, results, model, run=args.run)
        paper_ms = extra.get("forward_ms")
        if fp32 is not None and paper_ms:
            time_cell += f", {paper_ms / fp32['median_ms']:.2f}x the paper's speed"

        def pair(paper: Any, ours: Any) -> str:
            return f"{paper if paper is not None else '-'} / {ours if ours is not None else '-'}"

        rows.append(
            [
                entry.method,
                model if have_model else f"{model} (not released)",
                fmt(entry.mean_iu),
                fmt(released.mean_iu if released else None),
                fmt(measured.metrics.get("mean_iu") if measured else None, 2),
                fmt(paper_ms, 0, " ms"),
                time_cell,
                pair(extra.get("conv_layers"), cols.conv_layers if cols else None),
                pair(
                    f"{extra.get('params_millions')}M" if extra.get("params_millions") else None,
                    f"{cols.parameters / 1e6:.1f}M" if cols and cols.parameters is not None else None,
                ),
                pair(extra.get("receptive_field"), cols.receptive_field if cols else None),
                pair(extra.get("max_stride"), cols.max_stride if cols else None),
            ]
        )
    report.add(
        *markdown_table(
            [
                "net",
                "model",
                "mean IU paper (val)",
                "mean IU released (seg11valid)",
                "mean IU measured",
                "forward paper (K40c)",
                "forward measured",
                "conv layers",
                "parameters",
                "receptive field",
                "max stride",
            ],
            rows,
        )
    )
    report.note(
        "conv layers: Convolution layers on the longest path from the input to the coarse score "
        "(fc6/fc7 and the class scorer included, skip scorers and upsampling not); parameters leave "
        "out the upsampling layers (see eval.timing)"
    )
    return report


def main(argv: Sequence[str] | None = None) -> int:
    parser = tables.base_parser(
        "python -m reproduce.table1", "CVPR 2015 Table 1 (backbones): paper vs measured, as Markdown."
    )
    parser.add_argument(
        "--no-build", action="store_true", help="count parameters from the definitions, not built modules"
    )
    return tables.table_main(build, parser, argv)


if __name__ == "__main__":
    sys.exit(main())
