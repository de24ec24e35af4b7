"""``python -m eval.siftflow``: SIFT Flow, semantic (33 classes) and geometric (3 classes) heads."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from converters import cli

from .datasets import SIFTFlowSegmentation
from .runner import build_parser, command_prog, run_cli

SPLITS = ("test",)


def main(argv: Sequence[str] | None = None, prog: str = "python -m eval.siftflow") -> int:
    """Parse ``argv``, evaluate both heads, print the report; returns 0, 1 (--check failed) or 2.
    ``prog``: the command as typed, for its usage lines (``fcn-port eval`` passes its own)."""
    parser = build_parser(
        command_prog(prog, "siftflow"),
        "Evaluate a SIFT Flow FCN (or saved predictions) on the 200 test images: both heads, semantic "
        "(score_sem) and geometric (score_geo). cow, desert and moon never occur in the test set and are "
        "left out of the semantic class averages. Saved predictions go to DIR/semantic and DIR/geometric.",
        SPLITS,
        "test",
    )
    parser.add_argument(
        "--siftflow-root",
        required=True,
        metavar="PATH",
        help="the SIFT Flow folder (Images/, SemanticLabels/, GeoLabels/)",
    )

    def body() -> int:
        args = parser.parse_args(argv)
        return run_cli(
            args,
            dataset_key="siftflow",
            splits=SPLITS,
            make_dataset=lambda split, inputs, limit: SIFTFlowSegmentation(
                args.siftflow_root, split, inputs, limit
            ),
            modalities=SIFTFlowSegmentation.modalities,
        )

    return cli.run(body)


if __name__ == "__main__":
    sys.exit(main())
