"""``python -m reproduce.context``: PASCAL-Context (CVPR 2015 arXiv v2 appendix), paper vs measured."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from .tables import CONTEXT_VAL, dataset_table_main


def _rows() -> list:
    from weights import published

    return [row for row in published.CONTEXT if row.dataset == "pascalcontext"]


def main(argv: Sequence[str] | None = None) -> int:
    return dataset_table_main(
        "python -m reproduce.context",
        "PASCAL-Context, 59 classes (CVPR 2015 arXiv v2 appendix)",
        "VOC 2010 val (5,105 images), the 59 most frequent Context classes plus background. The paper's "
        "33-class task is not evaluated here. Measured: the released weights with `eval.context`.",
        _rows, CONTEXT_VAL, argv=argv,
    )


if __name__ == "__main__":
    sys.exit(main())
