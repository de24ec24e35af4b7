"""``python -m eval.context``: PASCAL-Context, the 59-class task (plus background), val split."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from converters import cli

from .datasets import ContextSegmentation
from .runner import build_parser, command_prog, run_cli

SPLITS = ("val",)


def main(argv: Sequence[str] | None = None, prog: str = "python -m eval.context") -> int:
    """Parse ``argv``, evaluate, print the report; returns 0, 1 (--check failed) or 2 (bad input).
    ``prog``: the command as typed, for its usage lines (``fcn-port eval`` passes its own)."""
    parser = build_parser(
        command_prog(prog, "context"),
        "Evaluate a PASCAL-Context FCN (or saved predictions) on VOC 2010 val (5,105 images) with the "
        "59 most frequent Context classes and background (60 outputs), mapped from the 459 full labels "
        "as the official data layer does.",
        SPLITS,
        "val",
    )
    parser.add_argument(
        "--voc-root",
        required=True,
        metavar="PATH",
        help="the VOC2010 folder (JPEGImages, ImageSets/Main), or VOCdevkit, or its parent",
    )
    parser.add_argument(
        "--context-root",
        required=True,
        metavar="PATH",
        help="the PASCAL-Context annotations folder (trainval/<id>.mat)",
    )

    def body() -> int:
        args = parser.parse_args(argv)
        return run_cli(
            args,
            dataset_key="pascalcontext",
            splits=SPLITS,
            make_dataset=lambda split, inputs, limit: ContextSegmentation(
                args.voc_root, args.context_root, split, inputs, limit
            ),
            modalities=ContextSegmentation.modalities,
        )

    return cli.run(body)


if __name__ == "__main__":
    sys.exit(main())
