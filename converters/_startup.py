"""What the packages do first when a command starts as ``python -m converters.caffe2torch`` (or any
``python -m`` of this project): a Ctrl-C that lands while the imports (torch above all) are still
running exits with status 130 and no traceback, as one during the command does."""

from __future__ import annotations

import sys
import types


def _quiet_keyboard_interrupt(hook: object) -> object:
    def excepthook(
        kind: type[BaseException], value: BaseException, trace: types.TracebackType | None
    ) -> None:
        if issubclass(kind, KeyboardInterrupt):
            return  # Python still ends by SIGINT: exit status 130, and no traceback is printed
        hook(kind, value, trace)  # type: ignore[operator]

    excepthook.quiet_ctrl_c = True  # type: ignore[attr-defined]
    return excepthook


def quiet_ctrl_c_while_starting() -> None:
    """Under ``python -m`` (``sys.argv[0]`` is ``-m`` while the package imports), let an unhandled
    Ctrl-C end the process silently; a library import leaves the interpreter's hook alone."""
    if sys.argv[:1] == ["-m"] and not getattr(sys.excepthook, "quiet_ctrl_c", False):
        sys.excepthook = _quiet_keyboard_interrupt(sys.excepthook)  # type: ignore[assignment]


quiet_ctrl_c_while_starting()  # on import: the packages import this module before anything slow
