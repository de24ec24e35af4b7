"""Streaming downloads that never leave a broken file: resume, retries, timeouts, checksum, lock.

``download(urls, dest, ...)`` fetches ``dest`` from the first URL that works (the rest are
mirrors). Bytes go to ``dest.part``; an interrupted transfer resumes from there with an HTTP
``Range`` request. Connection errors, timeouts and 5xx answers are retried with exponential backoff;
4xx answers and hosts that do not resolve are not. Only after the checksum passes is ``dest.part``
renamed onto ``dest`` (one ``os.replace``), so ``dest`` is either absent or whole, and a file that
was there before stays until a verified copy replaces it. Folders made for a download that fails
are removed again. Files get ``0666`` less the umask. An exclusive ``fcntl`` lock on ``.dest.lock``
makes a second process wait for the first, which then finds the finished file; the lock file is
removed when the download ends, whether it worked or not.
"""

from __future__ import annotations

import hashlib
import os
import re
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlparse

from .cache import file_lock

if TYPE_CHECKING:
    import requests

CHUNK = 1 << 20
_CONTENT_RANGE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)")


class DownloadError(ValueError):
    """A download failed; the message is one line naming the URLs tried and where to put a manual file."""


class ChecksumMismatch(DownloadError):
    """The downloaded bytes do not have the expected checksum (the partial file has been removed)."""


@dataclass(frozen=True)
class RetryPolicy:
    """How hard to try: ``retries`` extra attempts per URL without progress, ``backoff * 2**k`` seconds
    between them (at most ``max_backoff``), and the connect/read timeouts of each request in seconds."""

    retries: int = 4
    backoff: float = 1.0
    max_backoff: float = 30.0
    connect_timeout: float = 15.0
    read_timeout: float = 60.0


@dataclass(frozen=True)
class DownloadResult:
    """What ``download`` did: the final path, its sha256, the URL it came from (``None`` when the file
    was already there) and whether bytes were transferred."""

    path: Path
    sha256: str
    url: str | None
    downloaded: bool


class _Transient(Exception):
    """Worth retrying: connection dropped, timeout, 5xx."""


class _Permanent(Exception):
    """Not worth retrying on this URL: 4xx, bad URL."""


def file_digest(path: str | os.PathLike[str], algorithm: str = "sha256") -> str:
    """The hex digest of the file at ``path`` (``algorithm`` is any ``hashlib`` name)."""
    digest = hashlib.new(algorithm)
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def normalize_hex(value: str | None, algorithm: str) -> str | None:
    """``value`` lower-cased, or ``None``; ``DownloadError`` if it is not a ``algorithm`` hex digest."""
    if value is None:
        return None
    length = hashlib.new(algorithm).digest_size * 2
    text = value.strip().lower()
    if not re.fullmatch(rf"[0-9a-f]{{{length}}}", text):
        raise DownloadError(f"not a {algorithm} checksum (want {length} hex digits): {value!r}")
    return text


def part_path(dest: Path) -> Path:
    """Where the bytes of ``dest`` accumulate until they are verified."""
    return dest.with_name(dest.name + ".part")


def lock_path(dest: Path) -> Path:
    """The (hidden) lock file that serializes fetches of ``dest``."""
    return dest.with_name(f".{dest.name}.lock")


def _mismatch(path: Path, sha256: str | None, sha1: str | None) -> str | None:
    """A description (expected vs got) of the first checksum that ``path`` fails, or ``None``."""
    if sha256 is not None:
        got = file_digest(path, "sha256")
        if got != sha256:
            return f"expected sha256 {sha256}, got {got}"
    if sha1 is not None:
        got = file_digest(path, "sha1")
        if got != sha1:
            return f"expected sha1 {sha1}, got {got}"
    return None


def _progress_bar(total: int | None, initial: int, name: str, enabled: bool):
    from tqdm import tqdm

    return tqdm(
        total=total, initial=initial, unit="B", unit_scale=True, unit_divisor=1024,
        desc=name, file=sys.stderr, disable=not enabled, leave=False,
    )


def _transfer(session: requests.Session, url: str, part: Path, policy: RetryPolicy, progress: bool) -> None:
    """One request: append to ``part`` from where it ends (or restart it). Raises ``_Transient`` or
    ``_Permanent``; returns when the server's whole body is in ``part``."""
    import requests
    import urllib3
    have = part.stat().st_size if part.exists() else 0
    headers = {"Accept-Encoding": "identity"}
    if have:
        headers["Range"] = f"bytes={have}-"
    try:
        response = session.get(
            url, stream=True, headers=headers, allow_redirects=True,
            timeout=(policy.connect_timeout, policy.read_timeout),
        )
    except (requests.exceptions.InvalidURL, requests.exceptions.MissingSchema,
            requests.exceptions.InvalidSchema) as error:
        raise _Permanent(f"bad URL ({error})") from error
    except requests.exceptions.Timeout as error:
        raise _Transient(f"timed out after {policy.connect_timeout:g}/{policy.read_timeout:g} s") from error
    except requests.RequestException as error:
        if _unresolvable(error):  # offline or a wrong host name: retrying cannot help
            raise _Permanent(f"host {urlparse(url).hostname} not found (offline?)") from error
        raise _Transient(_short(error)) from error
    with response:
        status = response.status_code
        if status == 416 and have:
            total = re.search(r"/(\d+)$", response.headers.get("Content-Range", ""))
            if total and int(total.group(1)) == have:
                return  # the part file already holds everything
            part.unlink(missing_ok=True)
            raise _Transient(f"HTTP 416 for a resume at byte {have}; restarting")
        if status >= 500 or status in (408, 429):
            raise _Transient(f"HTTP {status} {response.reason}")
        if status >= 400:
            raise _Permanent(f"HTTP {status} {response.reason}")
        if status == 206 and have:
            match = _CONTENT_RANGE.match(response.headers.get("Content-Range", ""))
            if not match or int(match.group(1)) != have:
                part.unlink(missing_ok=True)
                raise _Transient("server answered a resume with the wrong byte range; restarting")
            total = None if match.group(3) == "*" else int(match.group(3))
            mode = "ab"
        else:
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            have, mode = 0, "wb"
        written = have
        bar = _progress_bar(total, have, part.name[: -len(".part")], progress)
        try:
            with open(part, mode) as handle:
                try:
                    for block in _body_blocks(response):
                        handle.write(block)
                        written += len(block)
                        bar.update(len(block))
                except requests.exceptions.Timeout as error:
                    raise _Transient(f"read timed out after {policy.read_timeout:g} s") from error
                except (requests.RequestException, urllib3.exceptions.HTTPError, ConnectionError) as error:
                    if "timed out" in str(error).lower():
                        raise _Transient(f"read timed out after {policy.read_timeout:g} s") from error
                    raise _Transient(f"connection lost after {written} bytes ({_short(error)})") from error
                finally:
                    handle.flush()
                    os.fsync(handle.fileno())
        finally:
            bar.close()
        if total is not None and written < total:
            raise _Transient(f"connection closed after {written} of {total} bytes")


def _body_blocks(response: requests.Response) -> Iterator[bytes]:
    """The body as it arrives. ``read1`` hands over every byte received before a connection drops
    (``iter_content`` would discard a partly filled chunk), so a resume starts exactly where we are."""
    raw = response.raw
    if not hasattr(raw, "read1"):  # urllib3 < 2
        yield from response.iter_content(1 << 16)
        return
    while True:
        block = raw.read1(CHUNK)
        if not block:
            return
        yield block


_REASONS = (
    ("Connection refused", "connection refused"),
    ("Name or service not known", "host not found (offline?)"),
    ("Temporary failure in name resolution", "host not found (offline?)"),
    ("No address associated with hostname", "host not found (offline?)"),
    ("Network is unreachable", "network unreachable (offline?)"),
    ("No route to host", "no route to host"),
    ("Connection reset by peer", "connection reset"),
    ("CERTIFICATE_VERIFY_FAILED", "TLS certificate verification failed"),
)


_UNRESOLVED = (
    "NameResolutionError", "Failed to resolve", "Name or service not known",
    "Temporary failure in name resolution", "No address associated with hostname",
    "nodename nor servname provided", "getaddrinfo failed",
)


def _unresolvable(error: BaseException) -> bool:
    """Whether ``error`` says the host name does not resolve (no DNS answer)."""
    text = str(error)
    return any(marker in text for marker in _UNRESOLVED)


def _short(error: BaseException) -> str:
    """A one-line, bounded description of a requests/urllib3 error."""
    text = " ".join(str(error).split())
    for marker, reason in _REASONS:
        if marker in text:
            return reason
    return text if len(text) <= 160 else text[:157] + "..."


def _fetch_with_retries(session: requests.Session, url: str, part: Path, policy: RetryPolicy,
                        progress: bool) -> None:
    """``_transfer`` until the body is complete; a transfer that made progress resets the retry count."""
    failures = 0
    while True:
        before = part.stat().st_size if part.exists() else 0
        try:
            _transfer(session, url, part, policy, progress)
            return
        except _Transient as error:
            after = part.stat().st_size if part.exists() else 0
            failures = 0 if after > before else failures + 1
            if failures > policy.retries:
                tries = policy.retries + 1
                raise _Transient(f"{error}; {tries} attempt{'s' if tries > 1 else ''}") from error
            if failures:
                time.sleep(min(policy.max_backoff, policy.backoff * 2 ** (failures - 1)))


def download(
    urls: str | Sequence[str],
    dest: str | os.PathLike[str],
    *,
    sha256: str | None = None,
    sha1: str | None = None,
    policy: RetryPolicy | None = None,
    progress: bool = True,
    session: requests.Session | None = None,
) -> DownloadResult:
    """Make ``dest`` a verified copy of the file at ``urls[0]`` (the others are mirrors, tried in order).

    If ``dest`` already exists and passes the given checksums it is kept and nothing is fetched; one
    that fails them is replaced only by a verified download (it stays if the download fails).
    ``DownloadError`` (one line: URLs and errors tried, the path where a file downloaded by hand
    belongs) when no URL works; ``ChecksumMismatch`` (expected vs got) when the bytes are wrong, after
    removing them. With no checksum given, any complete transfer is accepted. Folders created for
    ``dest`` are removed again when nothing was downloaded."""
    import requests  # imported on first download, so that offline commands never load it

    url_list = [urls] if isinstance(urls, str) else list(urls)
    if not url_list:
        raise DownloadError("no URL to download from")
    sha256 = normalize_hex(sha256, "sha256")
    sha1 = normalize_hex(sha1, "sha1")
    policy = policy or RetryPolicy()
    dest = Path(dest)
    created = _make_folders(dest.parent)
    part = part_path(dest)
    own_session = session is None
    session = session or requests.Session()
    kept = ""
    try:
        with file_lock(lock_path(dest)):
            if dest.exists():
                problem = _mismatch(dest, sha256, sha1)
                if problem is None:
                    return DownloadResult(dest, sha256 or file_digest(dest), None, False)
                print(f"warning: {dest} fails its checksum ({problem}); downloading it again "
                      "(the file stays until a verified copy replaces it)", file=sys.stderr)
                kept = f"; {dest} was left as it was"
            failures: list[str] = []
            mismatch = False
            for url in url_list:
                for _ in range(2):  # a second, clean try only when a resumed stale .part file was wrong
                    resumed = part.exists()
                    try:
                        _fetch_with_retries(session, url, part, policy, progress)
                    except (_Transient, _Permanent) as error:
                        failures.append(f"{url} ({error})")
                        break
                    problem = _mismatch(part, sha256, sha1)
                    if problem is None:
                        digest = sha256 or file_digest(part)
                        os.replace(part, dest)
                        return DownloadResult(dest, digest, url, True)
                    part.unlink(missing_ok=True)
                    if resumed:
                        print(f"warning: {dest.name}: the resumed partial file was wrong ({problem}); "
                              "downloading it again from the start", file=sys.stderr)
                        continue
                    failures.append(f"checksum mismatch for {url}: {problem} (the partial file was removed)")
                    mismatch = True
                    break
    except BaseException:
        _remove_if_unused(created, dest)
        raise
    finally:
        if own_session:
            session.close()
    _remove_if_unused(created, dest)
    hint = f"if you download it by hand, put it at {dest}"
    if mismatch:
        saved = f"{dest} was left as it was" if kept else f"nothing was saved at {dest}"
        raise ChecksumMismatch(f"{'; '.join(failures)}; {saved}")
    if len(url_list) == 1:
        raise DownloadError(f"could not download {failures[0]}; {hint}{kept}")
    raise DownloadError(f"could not download {dest.name} from {failures[0]} nor from the mirrors "
                        f"{', '.join(failures[1:])}; {hint}{kept}")


def _make_folders(folder: Path) -> list[Path]:
    """Create ``folder`` and its missing parents; the ones created, deepest first."""
    missing = []
    for candidate in (folder, *folder.parents):
        if candidate.exists():
            break
        missing.append(candidate)
    folder.mkdir(parents=True, exist_ok=True)
    return missing


def _remove_if_unused(created: list[Path], dest: Path) -> None:
    """Undo :func:`_make_folders` after a failed download: the lock file goes, then each created
    folder that is empty (a partial ``.part`` worth resuming keeps its folder)."""
    if not created:
        return
    lock_path(dest).unlink(missing_ok=True)
    for folder in created:
        try:
            folder.rmdir()
        except OSError:
            return
