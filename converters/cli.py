"""What every ``python -m ...`` command of the project shares (torch-free at import).

:func:`run` wraps a command's body so that it ends one way in every case:

- success: the body's exit status (0, or 1 for a failed check);
- bad input (the project's error classes, other ``ValueError``/``OSError``, a worker's re-raised
  error, out of memory): one ``error: ...`` line on stderr, exit 2, no traceback;
- Ctrl-C: exit 130 with at most one short line (partial output files are removed by
  :func:`converters.atomic.atomic_write` on the way out);
- a closed stdout pipe (``python -m weights list | head -1``): exit 141, silently, as a process
  killed by SIGPIPE does;
- ``--help``: exit 0; a bad argument: one ``error:`` line from :class:`Parser`, exit 2.

Bugs (any other exception) still show their traceback.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, NoReturn

if TYPE_CHECKING:
    import torch

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_INTERRUPTED, EXIT_BROKEN_PIPE = 0, 1, 2, 130, 141
MAX_MESSAGE = 600  # characters of an error line
_CANT = "can't allocate memory"  # torch's CPU allocator
_CPU_ALLOCATION = re.compile(_CANT + r": you tried to allocate (\d+) bytes")


class Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors are one ``error: ...`` line and exit 2 (no usage dump),
    and whose usage lines name the command as the user typed it: a ``python -m MODULE`` prog run
    through the ``fcn-port`` dispatcher becomes ``fcn-port COMMAND`` (:func:`typed_prog`)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        if isinstance(kwargs.get("prog"), str):
            kwargs["prog"] = typed_prog(kwargs["prog"])
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        """Print ``error: message (see --help)`` and exit 2."""
        raise SystemExit(_fail(f"{message} (see --help)"))


#: How the dispatcher was started (``sys.argv[0]``'s ending) -> how the user typed it.
_DISPATCHERS = (
    ((os.sep + "fcn-port",), "fcn-port"),
    ((os.path.join("converters", "__main__.py"),), "python -m converters"),
    ((os.path.join("reproduce", "cli.py"),), "python -m reproduce.cli"),
)


def typed_prog(prog: str, argv: Sequence[str] | None = None) -> str:
    """``prog`` (``python -m weights``) as the user typed the command: ``fcn-port weights`` when
    the process was started as ``fcn-port weights ...`` (``fcn-port eval voc`` for an evaluator),
    ``prog`` itself otherwise (``python -m weights``, or a call from Python)."""
    argv = sys.argv if argv is None else argv
    if not prog.startswith("python -m ") or len(argv) < 2 or not argv[0]:
        return prog
    start = argv[0] if os.path.basename(argv[0]) != "fcn-port" else os.sep + "fcn-port"
    head = next((typed for endings, typed in _DISPATCHERS if start.endswith(endings)), None)
    if head is None or argv[1].startswith("-"):
        return prog
    words = list(argv[1:3]) if argv[1] == "eval" and len(argv) > 2 else [argv[1]]
    return " ".join([head, *words])


def _fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return EXIT_BAD_INPUT


def one_line(error: BaseException) -> str:
    """``error`` as one bounded line: an ``OSError`` as ``path: reason``, a DataLoader worker's
    re-raised error as the worker's last line, whitespace collapsed."""
    if isinstance(error, OSError) and error.strerror:
        text = f"{error.filename}: {error.strerror}" if error.filename is not None else error.strerror
    elif isinstance(error, KeyError) and error.args:
        text = str(error.args[0])
    elif isinstance(error, MemoryError):
        text = f"out of memory{f' ({error})' if str(error) else ''}"
    else:
        text = str(error).strip()
        if "Original Traceback" in text:  # an error re-raised from a DataLoader worker
            last = text.splitlines()[-1]
            text = last.split(": ", 1)[1] if ": " in last else last
        if "out of memory" in text.lower() and "\n" in text:
            text = text.splitlines()[0]
        allocating = _CPU_ALLOCATION.search(text)
        if allocating:  # torch's CPU allocator: "[enforce fail at alloc_cpu.cpp:..] ... can't allocate"
            text = f"out of memory (an operation asked for {int(allocating.group(1)) / 2**30:.1f} GiB)"
    text = " ".join(text.split()) or type(error).__name__
    return text if len(text) <= MAX_MESSAGE else text[: MAX_MESSAGE - 3] + "..."


def is_user_error(error: BaseException) -> bool:
    """Whether ``error`` is something the user can fix (reported in one line) rather than a bug."""
    if isinstance(error, (ValueError, OSError, MemoryError)):
        return True  # every project error class is a ValueError; files and folders raise OSError
    if isinstance(error, RuntimeError):  # torch: out of memory, or an error re-raised from a worker
        text = str(error)
        return "out of memory" in text.lower() or "Original Traceback" in text or _CANT in text
    return False


def _silence_stdout() -> None:
    """Point stdout at /dev/null so that the interpreter's final flush cannot fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):  # no real stdout (captured in tests)
        pass


def run(body: Callable[[], int | None], *, interrupted: str | None = None) -> int:
    """Run a command's ``body`` (which parses its arguments and does the work) and return the exit
    status, as the module docstring describes. ``interrupted``: the one line printed on Ctrl-C
    (e.g. that a partial download resumes next time); nothing by default."""
    try:
        try:
            status = body()
        except SystemExit as exit_:  # argparse: --help (0) or a bad argument (2, already printed)
            code = exit_.code
            if code is None or isinstance(code, int):
                status = code
            else:
                print(f"error: {code}", file=sys.stderr)
                status = EXIT_BAD_INPUT
        sys.stdout.flush()  # a closed pipe shows here, not at the interpreter's exit
        return EXIT_OK if status is None else int(status)
    except KeyboardInterrupt:
        if interrupted:
            print(interrupted, file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as error:
        if isinstance(error, BrokenPipeError) and _stdout_closed():
            _silence_stdout()
            return EXIT_BROKEN_PIPE
        if not is_user_error(error):
            raise
        return _fail(one_line(error))


def _stdout_closed() -> bool:
    """Whether nobody reads our stdout any more (the reader of its pipe has gone)."""
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        return True
    except (OSError, ValueError):
        return False
    try:
        import select

        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        return any(events & select.POLLERR for _, events in poller.poll(0))
    except (OSError, ValueError, AttributeError):
        return False


# --- paths of the wrong kind: one message for each, the same in every command ---------------------


def _first_existing(path: str) -> str:
    """``path`` or its nearest ancestor that exists."""
    here = os.path.abspath(path)
    while not os.path.lexists(here) and os.path.dirname(here) != here:
        here = os.path.dirname(here)
    return here


def _display(path: str, absolute: str) -> str:
    """``absolute`` as the user would write it: relative to the folder they named ``path`` from."""
    if os.path.isabs(path):
        return absolute
    relative = os.path.relpath(absolute)
    return absolute if relative.startswith("..") else relative


def looks_like_path(text: str) -> bool:
    """Whether a model argument names a file rather than a registry model: it exists, or has a
    folder part or a file suffix (``.prototxt``, ``.safetensors``, ...); registry names have neither."""
    return os.path.exists(text) or os.sep in text or "/" in text or os.path.splitext(text)[1] != ""


def input_file(path: str | os.PathLike[str], what: str, hint: str = "") -> None:
    """Refuse a ``path`` that should name an existing file: :class:`UsageError` saying whether it
    is missing, a folder, or under a file (``what``: how the message names it, e.g. ``"--weights
    x.caffemodel"``; ``hint``: what to give instead, after a colon)."""
    from .errors import UsageError

    path = os.fspath(path)
    extra = f": {hint}" if hint else ""
    if os.path.isdir(path):
        raise UsageError(f"{what} is a folder, not a file{extra}")
    if os.path.exists(path):
        return
    found = _first_existing(path)
    if os.path.exists(found) and not os.path.isdir(found):
        raise UsageError(f"{what} does not exist: {_display(path, found)} is a file, not a folder")
    raise UsageError(f"{what} does not exist")


def input_folder(path: str | os.PathLike[str], what: str, hint: str = "") -> None:
    """Refuse a ``path`` that should name an existing folder (missing, or a file): :class:`UsageError`."""
    from .errors import UsageError

    path = os.fspath(path)
    extra = f": {hint}" if hint else ""
    if os.path.isdir(path):
        return
    if os.path.exists(path):
        raise UsageError(f"{what} is a file, not a folder{extra}")
    raise UsageError(f"{what} does not exist{extra}")


def output_file(path: str | os.PathLike[str], option: str, example: str = "") -> None:
    """Fail now, not after a long computation, if a file cannot be written at ``path``: a folder
    given where the file goes (``example``: a file name to suggest inside it), a folder that does not
    exist, a file where a folder of the path should be, or a place not writable
    (:func:`converters.atomic.check_writable`)."""
    from .atomic import check_writable
    from .errors import UsageError

    path = os.fspath(path)
    if os.path.isdir(path):
        inside = f", e.g. {os.path.join(path, example)}" if example else ""
        raise UsageError(f"{option} {path} is a folder: give a file name{inside}")
    parent = os.path.dirname(os.path.abspath(path))
    found = _first_existing(parent)
    if os.path.exists(found) and not os.path.isdir(found):
        raise UsageError(f"cannot write {path}: {_display(path, found)} is a file, not a folder")
    if found != parent:
        raise UsageError(f"cannot write {path}: the folder {_display(path, parent)} does not exist")
    check_writable(path, option)


def output_folder(path: str | os.PathLike[str], option: str) -> None:
    """Refuse an output folder ``path`` that is a file or lies under one (a folder that does not
    exist yet is fine: the command creates it)."""
    from .errors import UsageError

    path = os.fspath(path)
    found = _first_existing(path)
    if os.path.exists(found) and not os.path.isdir(found):
        if found == os.path.abspath(path):
            raise UsageError(f"{option} {path} is a file, not a folder")
        raise UsageError(f"{option} {path}: {_display(path, found)} is a file, not a folder")


def device(text: str | None, *, default: str | None = None) -> torch.device:
    """``--device`` as a ``torch.device``: ``None`` gives ``default``, else CUDA when available, else
    the CPU. :class:`UsageError` (one line) for a malformed name or a device this machine lacks."""
    import torch

    text = text or default
    if not text:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    from .graph.devices import checked_device

    return checked_device(text, what="--device", allow_meta=False)
