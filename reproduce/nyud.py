"""``python -m reproduce.nyud``: CVPR 2015 Table 4 (NYUDv2, 40 classes, test), paper vs measured."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from .tables import NYUD_TEST, dataset_table_main


def _rows() -> tuple:
    from weights import published

    return published.TABLE4


def main(argv: Sequence[str] | None = None) -> int:
    return dataset_table_main(
        "python -m reproduce.nyud",
        "CVPR 2015 Table 4: NYUDv2",
        "NYUDv2 test split, 40 classes; RGB, RGBD (early fusion), HHA and RGB-HHA (late fusion) inputs. "
        "Measured: the released weights with `eval.nyud`.",
        _rows, NYUD_TEST, argv=argv,
    )


if __name__ == "__main__":
    sys.exit(main())
