"""Where downloaded weights live, the file lock that guards them, and the recorded checksums."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

CACHE_ENV = "FCN_PORT_CACHE"
CHECKSUMS_FILE = "checksums.json"


def cache_dir(override: str | os.PathLike[str] | None = None) -> Path:
    """The weights cache: ``override``, else ``$FCN_PORT_CACHE``, else ``$XDG_CACHE_HOME/fcn-port``,
    else ``~/.cache/fcn-port``. The folder is not created here."""
    if override:
        return Path(override).expanduser()
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    if xdg and os.path.isabs(os.path.expanduser(xdg)):
        return Path(xdg).expanduser() / "fcn-port"
    base = Path.home() / ".cache"
    return base / "fcn-port"


@contextlib.contextmanager
def file_lock(path: str | os.PathLike[str]) -> Iterator[None]:
    """Hold an exclusive inter-process lock (``fcntl.flock``) on ``path`` (a ``.lock`` file) while inside.

    A second process entering with the same path blocks until the first leaves. The lock file is
    left in place (removing it would race with a waiter that has already opened it)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
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
