"""``python -m eval.voc``: PASCAL VOC segmentation (seg11valid, VOC2011 val, VOC2012 val)."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from converters import cli

from .datasets import VOCSegmentation
from .runner import build_parser, command_prog, run_cli

SPLITS = ("seg11valid", "val2011", "val2012")


def main(argv: Sequence[str] | None = None, prog: str = "python -m eval.voc") -> int:
    """Parse ``argv``, evaluate, print the report; returns 0, 1 (--check failed) or 2 (bad input).
    ``prog``: the command as typed, for its usage lines (``fcn-port eval`` passes its own)."""
    parser = build_parser(
        command_prog(prog, "voc"),
        "Evaluate an FCN model (or saved predictions) on PASCAL VOC segmentation: pixel accuracy, mean "
        "accuracy, mean IU, f.w. IU and per-class IU, beside the published figures. seg11valid is the "
        "736-image subset of VOC2011 val that excludes SBD train (the released models' validation set).",
        SPLITS,
        "seg11valid",
    )
    parser.add_argument(
        "--voc-root",
        required=True,
        metavar="PATH",
        help="VOC2011/VOC2012 folder (JPEGImages, SegmentationClass), or VOCdevkit, or its parent",
    )

    def body() -> int:
        args = parser.parse_args(argv)
        return run_cli(
            args,
            dataset_key="voc",
            splits=SPLITS,
            make_dataset=lambda split, inputs, limit: VOCSegmentation(args.voc_root, split, inputs, limit),
            modalities=VOCSegmentation.modalities,
        )

    return cli.run(body)


if __name__ == "__main__":
    sys.exit(main())
