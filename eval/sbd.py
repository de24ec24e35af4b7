"""``python -m eval.sbd``: the SBD (Hariharan et al.) segmentation val split, VOC's 21 classes."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from converters import cli

from .datasets import SBDSegmentation
from .runner import build_parser, command_prog, run_cli

SPLITS = ("val", "train")


def main(argv: Sequence[str] | None = None, prog: str = "python -m eval.sbd") -> int:
    """Parse ``argv``, evaluate, print the report; returns 0, 1 (--check failed) or 2 (bad input).
    ``prog``: the command as typed, for its usage lines (``fcn-port eval`` passes its own)."""
    parser = build_parser(
        command_prog(prog, "sbd"),
        "Evaluate a PASCAL FCN (or saved predictions) on SBD val (2,857 images). The released VOC models "
        "were trained on SBD train, so val is a fair split; no figures were published for it.",
        SPLITS,
        "val",
    )
    parser.add_argument(
        "--sbd-root",
        required=True,
        metavar="PATH",
        help="SBD's benchmark_RELEASE/dataset folder (img/, cls/, val.txt), or a parent",
    )

    def body() -> int:
        args = parser.parse_args(argv)
        return run_cli(
            args,
            dataset_key="sbd",
            splits=SPLITS,
            make_dataset=lambda split, inputs, limit: SBDSegmentation(args.sbd_root, split, inputs, limit),
            modalities=SBDSegmentation.modalities,
        )

    return cli.run(body)


if __name__ == "__main__":
    sys.exit(main())
