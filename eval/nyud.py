"""``python -m eval.nyud``: NYUDv2, 40 classes, colour / HHA / colour+depth inputs."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from converters import cli

from .datasets import NYUDSegmentation
from .runner import build_parser, command_prog, run_cli

SPLITS = ("test", "val")


def main(argv: Sequence[str] | None = None, prog: str = "python -m eval.nyud") -> int:
    """Parse ``argv``, evaluate, print the report; returns 0, 1 (--check failed) or 2 (bad input).
    ``prog``: the command as typed, for its usage lines (``fcn-port eval`` passes its own)."""
    parser = build_parser(
        command_prog(prog, "nyud"),
        "Evaluate an NYUDv2 FCN (or saved predictions) on the 40-class task of Gupta et al. Each net "
        "input is fed from the matching dataset input: color (BGR), hha, depth (log depth) or "
        "color-depth (4 channels, the early-fusion net); override with --input NAME=MODALITY.",
        SPLITS,
        "test",
    )
    parser.add_argument(
        "--nyud-root",
        required=True,
        metavar="PATH",
        help="the FCN authors' nyud folder (data/images, data/hha, data/depth, segmentation)",
    )

    def body() -> int:
        args = parser.parse_args(argv)
        return run_cli(
            args,
            dataset_key="nyud",
            splits=SPLITS,
            make_dataset=lambda split, inputs, limit: NYUDSegmentation(args.nyud_root, split, inputs, limit),
            modalities=NYUDSegmentation.modalities,
        )

    return cli.run(body)


if __name__ == "__main__":
    sys.exit(main())
