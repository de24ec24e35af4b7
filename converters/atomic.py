"""Writing files so that a reader never sees a partial one.

The bytes go to a hidden temporary file next to the destination, which replaces it (one
``os.replace``) only when everything was written; on any error, Ctrl-C included, the temporary
file is removed. The result gets the permissions a plain ``open(path, "w")`` would give: those of
the file it replaces, else ``0666`` less the umask. Errors name the user's path, never the
temporary one.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import tempfile
from collections.abc import Iterator
from typing import IO

from .errors import UsageError

#: Errors of writing a file's bytes that carry no file name: they belong to the destination.
_WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EIO, errno.EROFS}


def current_umask() -> int:
    """The process umask, read without changing it (``os.umask`` would, racing other threads)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)  # no /proc (macOS): read by setting, then restore at once
    os.umask(mask)
    return mask


def new_file_mode(path: str | os.PathLike[str]) -> int:
    """The permission bits ``path`` should get: those of the file already there, else
    ``0666`` less the umask (what ``open(path, "w")`` gives)."""
    try:
        return stat.S_IMODE(os.stat(path).st_mode)
    except OSError:
        return 0o666 & ~current_umask()


def check_writable(path: str | os.PathLike[str], option: str = "output") -> None:
    """Fail now, not after a long computation, if ``path`` cannot be written: :class:`UsageError`
    naming ``path`` (a folder, a missing folder, a read-only place ...). Tries a real temporary file
    in the destination folder, so permissions, read-only file systems and ``/sys`` all count."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise UsageError(f"{option} {path} is a folder: give a file name")
    if not os.path.isdir(directory):
        blocker = directory  # the nearest part of the path that exists: a file in the way?
        while not os.path.lexists(blocker) and os.path.dirname(blocker) != blocker:
            blocker = os.path.dirname(blocker)
        if os.path.exists(blocker) and not os.path.isdir(blocker):
            raise UsageError(f"cannot write {path}: {blocker} is a file, not a folder")
        raise UsageError(f"cannot write {path}: the folder {directory} does not exist")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".part", dir=directory)
    except OSError as exc:
        raise UsageError(f"cannot write {path}: {exc.strerror or exc}") from None
    os.close(fd)
    with contextlib.suppress(OSError):
        os.unlink(tmp)
    if os.path.exists(path) and not os.access(path, os.W_OK) and os.geteuid() != 0:
        # os.replace would still succeed (the folder is writable); refuse as ``open`` would.
        raise UsageError(f"cannot write {path}: the file is read-only")


def _user_error(exc: OSError, tmp: str, path: str) -> OSError:
    """``exc`` naming ``path`` where it named the temporary file (or nothing, for a write error)."""
    if exc.filename == tmp or exc.filename2 == tmp or (exc.filename is None and exc.errno in _WRITE_ERRNOS):
        renamed = OSError(exc.errno, exc.strerror or str(exc), path)
        return renamed
    return exc


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[str]:
    """A temporary path next to ``path`` (same suffix, not yet created) for a writer that wants a
    file name; it replaces ``path`` when the block ends normally and is removed otherwise. Check
    the written file inside the block: raising there keeps whatever was at ``path`` before."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    base, suffix = os.path.basename(path), os.path.splitext(path)[1]
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{base}.", suffix=f".part{suffix}", dir=directory)
    except OSError as exc:
        raise OSError(exc.errno, exc.strerror or str(exc), path) from None
    os.close(fd)
    try:
        yield tmp
        os.chmod(tmp, new_file_mode(path))
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise _user_error(exc, tmp, path) from None
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike[str], mode: str = "wb") -> Iterator[IO]:
    """Open a temporary file next to ``path``; on success it replaces ``path``, on error it is
    removed. The new file has the mode of the one it replaces, else ``0666`` less the umask."""
    with atomic_path(path) as tmp, open(tmp, mode) as handle:
        yield handle
        handle.flush()
        os.fsync(handle.fileno())
