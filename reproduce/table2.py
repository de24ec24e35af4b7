"""``python -m reproduce.table2``: CVPR 2015 Table 2 (skip architectures on seg11valid), paper vs measured.

For each net: the paper's four metrics (its own models), the published figures of the released
weights (official README; four-decimal re-evaluation where there is one) and ours, measured with
``eval.voc`` on seg11valid, with the difference to the released figures.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from . import tables
from .tables import METRICS, VOC2011_SEG11VALID, Report, fmt, markdown_table

#: Released nets without a Table 2 row of their own, shown after the paper's rows.
EXTRA_RELEASED = ("voc-fcn8s-atonce",)


def build(args: argparse.Namespace) -> Report:
    from weights import published

    results = tables.results_dir(args.results)
    report = Report()
    report.add(
        "## CVPR 2015 Table 2: skip architectures on seg11valid (paper vs measured)",
        "",
        "seg11valid: the 736 images of VOC 2011 val not in SBD train. \"paper\": the CVPR models; "
        "\"released\": the published figures of the released (heavy) weights; \"measured\": those weights "
        "evaluated here with `eval.voc`; delta = measured - released.",
        "",
    )
    rows = []
    entries = [(r.method, r.model, r) for r in published.TABLE2]
    entries += [(m, m, None) for m in EXTRA_RELEASED]
    for method, model, paper in entries:
        released = published.lookup(model, "voc2011", "seg11valid", "released")
        if paper is not None:
            rows.append([method, "paper", *(fmt(getattr(paper, m)) for m in METRICS), ""])
        if released is None:
            note = paper.note if paper is not None and paper.note else "no released weights"
            report.note(f"{method}: {note}; nothing to measure")
            continue
        if paper is None:
            method = released.method
        digits = 4 if any(v is not None and round(v, 1) != v for v in released.metrics().values()) else 1
        rows.append([method, f"released ({released.source.work.split(',')[0]})",
                     *(fmt(getattr(released, m), digits) for m in METRICS), ""])
        measured = tables.measured_scores(report, results, model, VOC2011_SEG11VALID, run=args.run)
        if measured is not None:
            values = [measured.metrics.get(m) for m in METRICS]
            delta = [
                f"{m}: {v - getattr(released, m):+.2f}"
                for m, v in zip(METRICS, values, strict=True)
                if v is not None and getattr(released, m) is not None
            ]
            rows.append([method, f"measured ({model})", *(fmt(v, 2) for v in values), ", ".join(delta)])
    headers = ["net", "source", *(tables.METRIC_TITLES[m] for m in METRICS), "delta vs released"]
    report.add(*markdown_table(headers, rows))
    return report


def main(argv: Sequence[str] | None = None) -> int:
    parser = tables.base_parser(
        "python -m reproduce.table2", "CVPR 2015 Table 2 (skip architectures): paper vs measured."
    )
    return tables.table_main(build, parser, argv)


if __name__ == "__main__":
    sys.exit(main())
