"""``python -m converters``: the project's commands (the same as ``fcn-port``).

With no arguments (or ``--help``) it lists every command and its ``python -m`` module; with a
command it runs it: ``python -m converters inspect deploy.prototxt``.
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    """Run ``fcn-port``'s dispatcher (:mod:`reproduce.cli`) on ``argv``."""
    from reproduce.cli import main as dispatch

    return dispatch(argv, prog="python -m converters")


if __name__ == "__main__":
    sys.exit(main())
