"""The folder fcn-port keeps its downloads and calibrations in (the one rule for every command and
module: ``--cache-dir``, ``$FCN_PORT_CACHE``, ``$XDG_CACHE_HOME/fcn-port``, ``~/.cache/fcn-port``).
Torch-free and light, so that the graph code can use it without importing :mod:`weights`."""

from __future__ import annotations

import os
from pathlib import Path

CACHE_ENV = "FCN_PORT_CACHE"


class CacheError(ValueError):
    """The weights cache names something that is not a folder (one line)."""


def cache_dir(override: str | os.PathLike[str] | None = None) -> Path:
    """The weights cache: ``override``, else ``$FCN_PORT_CACHE``, else ``$XDG_CACHE_HOME/fcn-port``,
    else ``~/.cache/fcn-port``. The folder is not created here; :class:`CacheError` if the path is
    there but is not a folder (a photo given as ``--cache-dir``)."""
    if override:
        return _folder(Path(override).expanduser(), "--cache-dir")
    env = os.environ.get(CACHE_ENV)
    if env:
        return _folder(Path(env).expanduser(), f"${CACHE_ENV}")
    xdg = os.environ.get("XDG_CACHE_HOME")
    if xdg and os.path.isabs(os.path.expanduser(xdg)):
        return _folder(Path(xdg).expanduser() / "fcn-port", "the weights cache")
    base = Path.home() / ".cache"
    return _folder(base / "fcn-port", "the weights cache")


def _folder(path: Path, what: str) -> Path:
    if path.exists() and not path.is_dir():
        raise CacheError(f"{what} {path} is a file, not a folder: give the folder that holds the weights")
    return path
