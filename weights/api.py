"""fetch / verify / cached_path / load: the registry, the cache and the downloader put together."""

from __future__ import annotations

import argparse
import datetime as _dt
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING
from urllib.parse import unquote, urlparse

from .cache import CHECKSUMS_FILE, read_checksums, update_checksum
from .cache import cache_dir as resolve_cache_dir
from .download import (
    ChecksumMismatch,
    DownloadError,
    RetryPolicy,
    download,
    file_digest,
    normalize_hex,
)
from .registry import WeightsRecord, find_by_filename, find_by_url, get

if TYPE_CHECKING:
    import torch

MIRRORS_ENV = "FCN_PORT_MIRRORS"


class NotReleasedError(DownloadError):
    """The registry knows the net but no weights were ever published for it."""


class NotDownloadedError(DownloadError):
    """A registry model's weights are not in the cache and no download was asked for."""


#: The ``--download`` help of every command that may need a registry model's weights: the one rule.
DOWNLOAD_HELP = (
    "fetch a registry model's weights (verified) into the cache when they are not there. Without it "
    "nothing is downloaded unasked: on a terminal the command asks first, otherwise it stops with one "
    "line saying what is missing"
)


def add_download_option(parser: argparse.ArgumentParser) -> None:
    """Give ``parser`` the ``--download`` flag of the download rule (``args.download``: ``True`` or
    ``None``, as :func:`obtain` and :func:`weights.load_model` take it)."""
    parser.add_argument("--download", action="store_const", const=True, default=None, help=DOWNLOAD_HELP)


def _interactive() -> bool:
    try:
        return sys.stdin.isatty() and sys.stderr.isatty()
    except (AttributeError, ValueError):  # closed or replaced streams
        return False


def obtain(
    name: str | WeightsRecord,
    *,
    download: bool | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    progress: bool = True,
) -> Path:
    """The caffemodel of registry model ``name``, by the one download rule every command follows.

    A copy in the cache is checked against its checksums (``ChecksumMismatch`` if it fails; it is
    never replaced unasked) and returned. A missing one is fetched when ``download`` is ``True``;
    with ``download=None`` (a command run without ``--download``) the user is asked
    ``Download voc-fcn8s weights (about 513 MiB) to DIR? [y/N]`` when stdin and stderr are a terminal;
    otherwise, and with ``download=False``, :class:`NotDownloadedError` says in one line what is
    missing and how to get it."""
    record = _released(name if isinstance(name, WeightsRecord) else get(name))
    path = cached_path(record.name, cache_dir)
    if download:
        return fetch(record, cache_dir=cache_dir, progress=progress)
    if path.is_file():
        verify(record.name, cache_dir=cache_dir)
        return path
    size = f" ({record.approx_size_text})" if record.approx_size else ""
    if download is None and _interactive():
        sys.stderr.write(f"Download {record.name} weights{size} to {path.parent}? [y/N] ")
        sys.stderr.flush()
        answer = sys.stdin.readline().strip().lower()
        if answer in ("y", "yes"):
            return fetch(record, cache_dir=cache_dir, progress=progress)
    how = "pass download=True" if download is False else "add --download"
    raise NotDownloadedError(
        f"{record.name} weights ({record.filename}{', ' + record.approx_size_text if size else ''}) not in "
        f"the cache {path.parent}; {how} (or give the caffemodel path)"
    )


def is_url(text: str) -> bool:
    """Whether ``text`` is an http(s)/ftp/file URL rather than a registry name or a path."""
    return urlparse(text).scheme in ("http", "https", "ftp", "file")


def _released(record: WeightsRecord) -> WeightsRecord:
    if not record.released:
        raise NotReleasedError(f"{record.name} has no released weights ({record.notes})")
    return record


def cached_path(name: str, cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Where the caffemodel of registry entry ``name`` is (or will be) in the cache. No network, no I/O."""
    record = _released(get(name))
    assert record.filename is not None
    return resolve_cache_dir(cache_dir) / record.filename


def mirror_urls(filename: str, mirrors: tuple[str, ...] | list[str] = ()) -> list[str]:
    """Extra URLs for ``filename``: each mirror base in ``mirrors`` and in ``$FCN_PORT_MIRRORS``
    (whitespace- or comma-separated) with the file name appended; full URLs ending in the name are kept."""
    bases = list(mirrors) + os.environ.get(MIRRORS_ENV, "").replace(",", " ").split()
    urls = []
    for base in bases:
        url = base if base.endswith("/" + filename) else base.rstrip("/") + "/" + filename
        if url not in urls:
            urls.append(url)
    return urls


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()


def fetch(
    name_or_url: str | WeightsRecord,
    *,
    sha256: str | None = None,
    sha1: str | None = None,
    dest: str | os.PathLike[str] | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    mirrors: tuple[str, ...] | list[str] = (),
    policy: RetryPolicy | None = None,
    progress: bool = True,
    log: IO[str] | None = None,
) -> Path:
    """Download registry entry ``name_or_url`` (a name, a record, or a URL) into ``dest`` (default: the
    cache) unless a verified copy is already there; return its path. A URL whose file name is that of
    a registry caffemodel is treated as a copy of it: the record's published checksum applies.

    Checked against ``sha256``/``sha1`` if given, else the published checksum of the record, else
    the sha256 recorded at the first download (``checksums.json`` in the cache). A first download
    with no checksum at all is accepted, its sha256 recorded, and a note printed to ``log``
    (default stderr). Raises ``DownloadError``/``ChecksumMismatch`` (one line each)."""
    log = sys.stderr if log is None else log
    sha256 = normalize_hex(sha256, "sha256")
    sha1 = normalize_hex(sha1, "sha1")
    cache_root = resolve_cache_dir(cache_dir)
    if isinstance(name_or_url, WeightsRecord) or not is_url(name_or_url):
        record = _released(name_or_url if isinstance(name_or_url, WeightsRecord) else get(name_or_url))
        assert record.filename is not None
        filename = record.filename
        urls = list(record.urls)
    else:
        url = name_or_url
        filename = unquote(Path(urlparse(url).path).name)
        if not filename:
            raise DownloadError(f"cannot tell a file name from the URL {url}")
        record = find_by_url(url) or find_by_filename(filename)
        urls = [url]
    urls += [u for u in mirror_urls(filename, mirrors) if u not in urls]
    published_sha256 = sha256 or (record.sha256 if record else None)
    published_sha1 = sha1 or (record.sha1 if record else None)
    recorded = read_checksums(cache_root).get(filename, {})
    use_recorded = bool(recorded.get("sha256")) and (record is not None or recorded.get("url") in urls)
    expected_sha256 = published_sha256 or (recorded["sha256"] if use_recorded else None)
    if dest is not None and Path(dest).expanduser().exists() and not Path(dest).expanduser().is_dir():
        raise DownloadError(f"--dest {dest} is a file, not a folder: give the folder to put {filename} in")
    target = Path(dest).expanduser() / filename if dest is not None else cache_root / filename
    try:
        result = download(urls, target, sha256=expected_sha256, sha1=published_sha1, policy=policy,
                          progress=progress)
    except ChecksumMismatch as error:
        if expected_sha256 and not published_sha256 and not published_sha1:
            when = recorded.get("recorded", "?")
            raise ChecksumMismatch(f"{error} (the expected sha256 was recorded at the first download, "
                                   f"{when}, in {cache_root / CHECKSUMS_FILE})") from error
        raise
    if not use_recorded or result.downloaded:
        if not (published_sha256 or published_sha1):  # a checksum is only pinned for real weights
            _check_is_weights(result.path)
        update_checksum(cache_root, filename, sha256=result.sha256, size=result.path.stat().st_size,
                        url=result.url or urls[0], recorded=_now(),
                        published=bool(published_sha256 or published_sha1))
        if not (published_sha256 or published_sha1 or use_recorded):
            what = "this first download" if result.downloaded else f"the file already at {result.path}"
            print(f"note: no published checksum for {filename}; recorded the sha256 of {what}, "
                  f"{result.sha256}, in {cache_root / CHECKSUMS_FILE}; later fetches and `verify` check "
                  "against it", file=log)
    return result.path


def _check_is_weights(path: Path, consequence: str | None = None) -> None:
    """:class:`DownloadError` unless ``path`` reads as a caffemodel (binary or HDF5): a file with no
    published checksum gets its sha256 recorded only then, so an empty or broken file is never the
    reference later downloads must match; ``verify`` refuses such a file (a photo) the same way."""
    from converters import CaffeFormatError, read_weights

    try:
        if not read_weights(path):
            raise CaffeFormatError("holds no layer with weights", path)
    except CaffeFormatError as exc:
        what = consequence or "so no checksum was recorded for it; remove it and fetch again"
        raise DownloadError(f"{exc}: not a caffemodel, {what}") from None


@dataclass(frozen=True)
class Verification:
    """The result of ``verify``: the file, its sha256, and what it was checked against (empty when
    nothing was known to check against)."""

    path: Path
    sha256: str
    checked: tuple[str, ...]


def verify(name_or_file: str, *, sha256: str | None = None,
           cache_dir: str | os.PathLike[str] | None = None) -> Verification:
    """Check a cached registry file (or any file) against every checksum known for it: ``sha256`` if
    given, the record's published sha256/sha1, and the sha256 recorded at its first download.

    ``ChecksumMismatch`` (expected vs got) on a failure, ``DownloadError`` if the file is absent."""
    sha256 = normalize_hex(sha256, "sha256")
    cache_root = resolve_cache_dir(cache_dir)
    candidate = Path(name_or_file).expanduser()
    if candidate.is_dir():
        raise DownloadError(f"{name_or_file} is a folder: give a weights file or a registry name")
    if candidate.is_file():
        path, record = candidate, find_by_filename(candidate.name)
    else:
        if os.sep in name_or_file or name_or_file.endswith(".caffemodel"):
            raise DownloadError(f"no such file: {name_or_file}")
        record = _released(get(name_or_file))
        path = cached_path(record.name, cache_dir)
        if not path.is_file():
            raise DownloadError(f"{record.name} is not downloaded: run `python -m weights fetch "
                                f"{record.name}` or put the file at {path}")
    checks: list[tuple[str, str, str]] = []
    if sha256:
        checks.append(("sha256", sha256, "given on the command line"))
    if record is not None and record.sha256:
        checks.append(("sha256", record.sha256, f"published ({record.checksum_source})"))
    if record is not None and record.sha1:
        checks.append(("sha1", record.sha1, f"published ({record.checksum_source})"))
    recorded = read_checksums(cache_root).get(path.name, {})
    if recorded.get("sha256") and (record is not None or path.parent == cache_root):
        when = recorded.get("recorded")
        checks.append(("sha256", recorded["sha256"], f"recorded at the first download, {when}"))
    if not checks:  # nothing to compare with: at least it must be weights
        _check_is_weights(path, "nothing to verify")
    digests = {"sha256": file_digest(path, "sha256")}
    done = []
    for algorithm, expected, source in checks:
        got = digests.get(algorithm) or digests.setdefault(algorithm, file_digest(path, algorithm))
        if got != expected:
            raise ChecksumMismatch(f"{path} fails its checksum: expected {algorithm} {expected} ({source}), "
                                   f"got {got}")
        done.append(f"{algorithm} {source}")
    return Verification(path, digests["sha256"], tuple(done))


def load(name: str, device: str | torch.device | None = None, *, download: bool = True,
         cache_dir: str | os.PathLike[str] | None = None, progress: bool = True) -> torch.nn.Module:
    """Registry entry ``name`` as a PyTorch module in eval mode (:func:`weights.models.load_model`).

    Its weights are verified in the cache and, by default (``download=True``, as ``torch.hub``
    does), fetched into it when missing; ``download=False`` never touches the network and raises
    :class:`NotDownloadedError` (one line) when they are not cached. ``net(data=x)`` returns a dict
    of output blobs (see the record's ``inputs``/``outputs``)."""
    from .models import load_model

    _released(get(name))
    return load_model(name, device, cache_dir=cache_dir, progress=progress, download=download).net
