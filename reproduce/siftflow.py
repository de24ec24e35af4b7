"""``python -m reproduce.siftflow``: CVPR 2015 Table 5 (SIFT Flow, semantic and geometric heads)."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from .tables import SIFTFLOW_TEST, ExtraColumn, dataset_table_main


def _rows() -> tuple:
    from weights import published

    return [row for row in published.TABLE5 if row.dataset == "siftflow"]  # geometric: its extra column


def main(argv: Sequence[str] | None = None) -> int:
    return dataset_table_main(
        "python -m reproduce.siftflow",
        "CVPR 2015 Table 5: SIFT Flow",
        "SIFT Flow test split: 33 semantic classes (the four metrics) and 3 geometric classes (pixel "
        "accuracy). Measured: the released weights with `eval.siftflow`.",
        _rows, SIFTFLOW_TEST,
        extra=(ExtraColumn("geom. acc", "geometric_acc", "geometric", "pixel_acc"),),
        argv=argv,
    )


if __name__ == "__main__":
    sys.exit(main())
