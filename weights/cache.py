"""Where downloaded weights live, the file lock that guards them, and the recorded checksums."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from converters.cache_folder import CACHE_ENV, CacheError, cache_dir

__all__ = ["CACHE_ENV", "CHECKSUMS_FILE", "CacheError", "cache_dir", "file_lock", "read_checksums",
           "update_checksum"]  # fmt: skip

CHECKSUMS_FILE = "checksums.json"


@contextlib.contextmanager
def file_lock(path: str | os.PathLike[str]) -> Iterator[None]:
    """Hold an exclusive inter-process lock (``fcntl.flock``) on ``path`` (a ``.lock`` file) while inside.

    A second process entering with the same path blocks until the first leaves. The lock file is
    removed on the way out, success or failure, so no ``.lock`` file is left beside the weights: a
    waiter that had opened the removed file notices (the path no longer names its file) and locks
    the path afresh."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except BaseException:
            os.close(fd)
            raise
        try:
            current = os.stat(path)
        except FileNotFoundError:
            current = None
        mine = os.fstat(fd)
        if current is not None and (current.st_ino, current.st_dev) == (mine.st_ino, mine.st_dev):
            break
        os.close(fd)  # the holder before us removed this file: lock the path's new one
    try:
        yield
    finally:
        try:
            with contextlib.suppress(OSError):  # gone already, or a read-only folder
                os.unlink(path)  # still locked: nobody holds the path's file but us
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)


def _checksums_path(cache: Path) -> Path:
    return cache / CHECKSUMS_FILE


def read_checksums(cache: Path) -> dict[str, dict[str, Any]]:
    """The recorded checksums of ``cache``: ``{filename: {"sha256", "size", "url", "first_download", ...}}``.

    A missing or unreadable file counts as empty (it is only a record of what we downloaded)."""
    try:
        data = json.loads(_checksums_path(cache).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def update_checksum(cache: Path, filename: str, **fields: Any) -> dict[str, Any]:
    """Merge ``fields`` into the record of ``filename`` in ``cache/checksums.json`` (locked, atomic)."""
    from converters.atomic import atomic_write  # imported here: `list`/`path` stay light and offline

    cache.mkdir(parents=True, exist_ok=True)
    with file_lock(cache / f".{CHECKSUMS_FILE}.lock"):
        data = read_checksums(cache)
        entry = dict(data.get(filename, {}))
        entry.update(fields)
        data[filename] = entry
        with atomic_write(_checksums_path(cache), "w") as handle:
            json.dump(data, handle, indent=2, sort_keys=True)
            handle.write("\n")
    return entry
