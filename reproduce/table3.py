"""``python -m reproduce.table3``: CVPR 2015 Table 3 (test-set mean IU and inference time).

The VOC 2011 and 2012 test labels are not public: test mean IU can only come from the PASCAL VOC
evaluation server, so the measured column shows what can be measured here, the inference time of
voc-fcn8s at 500x500 (``eval.timing``), beside the paper's ~175 ms on a Tesla K40c.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from . import tables
from .table1 import measured_time
from .tables import Report, fmt, markdown_table

MODEL = "voc-fcn8s"


def _inference(rows: Sequence) -> str:
    for row in rows:
        ms = row.get("inference_ms")
        if ms:
            return f"~{ms / 1000:.0f} s" if ms >= 1000 else f"~{ms:.0f} ms"
    return "-"


def build(args: argparse.Namespace) -> Report:
    from weights import published

    results = tables.results_dir(args.results)
    report = Report()
    report.add(
        "## CVPR 2015 Table 3: VOC test sets (mean IU) and inference time (paper vs measured)",
        "",
    )
    methods: dict[str, list] = {}
    for row in published.TABLE3:
        methods.setdefault(row.method, []).append(row)
    rows = []
    for method, entries in methods.items():
        by_set = {r.dataset: r.mean_iu for r in entries}
        rows.append([
            method, "paper", fmt(by_set.get("voc2011")), fmt(by_set.get("voc2012")), _inference(entries),
        ])
    released = published.lookup(MODEL, "voc2012", "test", "released")
    time_cell, fp32 = measured_time(report, results, MODEL, run=args.run)
    paper_ms = next((r.get("inference_ms") for r in published.TABLE3 if r.model == MODEL), None)
    if fp32 is not None and paper_ms:
        time_cell += f", {paper_ms / fp32['median_ms']:.2f}x the paper's speed"
    rows.append([
        "FCN-8s", f"released {MODEL}", "-", fmt(released.mean_iu if released else None), "-",
    ])
    rows.append(["FCN-8s", f"measured {MODEL}", "-", "-", time_cell])
    report.add(*markdown_table(["method", "source", "VOC2011 test", "VOC2012 test", "inference time"], rows))
    report.note("inference time: paper on a Tesla K40c; measured = median forward pass at 500x500 here")
    report.need(
        "VOC 2011/2012 test mean IU: the test labels are withheld; test scores come only from the "
        "PASCAL VOC evaluation server (host.robots.ox.ac.uk:8080), which this repository does not submit to"
    )
    return report


def main(argv: Sequence[str] | None = None) -> int:
    parser = tables.base_parser(
        "python -m reproduce.table3", "CVPR 2015 Table 3 (test sets, inference time): paper vs measured."
    )
    return tables.table_main(build, parser, argv)


if __name__ == "__main__":
    sys.exit(main())
