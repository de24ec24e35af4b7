"""weights.fetch / verify / cached_path / cache_dir: registry records served by a real local HTTP server."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import socket
from pathlib import Path

import pytest

import weights
from tests.conftest import caffemodel_bytes
from tests.httpserver import LocalHTTPServer, Route
from weights import registry
from weights.cache import cache_dir, read_checksums
from weights.download import RetryPolicy

FAST = RetryPolicy(retries=1, backoff=0.01, max_backoff=0.02, connect_timeout=2.0, read_timeout=2.0)
BODY = caffemodel_bytes(7, 300_001)
SHA256 = hashlib.sha256(BODY).hexdigest()
FILENAME = "fcn32s-heavy-pascal.caffemodel"


@pytest.fixture
def server():
    with LocalHTTPServer() as srv:
        yield srv


def _serve_record(monkeypatch, server, name="voc-fcn32s", **changes):
    """Point registry entry ``name`` at the local server (the registry's own record, with its URL swapped)."""
    record = weights.get(name)
    path = f"/dl/{record.filename}"
    server.route(path, Route(body=BODY))
    local = dataclasses.replace(record, url=server.url(path), **changes)
    monkeypatch.setitem(registry.RECORDS, name, local)
    return local


def test_first_download_without_a_published_checksum_records_its_sha256(monkeypatch, server, tmp_path):
    record = _serve_record(monkeypatch, server)
    assert record.sha1 is None and record.sha256 is None
    log = io.StringIO()
    path = weights.fetch("voc-fcn32s", cache_dir=tmp_path, policy=FAST, progress=False, log=log)
    assert path == tmp_path / FILENAME == weights.cached_path("voc-fcn32s", tmp_path)
    assert path.read_bytes() == BODY
    entry = read_checksums(tmp_path)[FILENAME]
    assert entry["sha256"] == SHA256 and entry["size"] == len(BODY) and entry["url"] == record.url
    assert "no published checksum" in log.getvalue() and SHA256 in log.getvalue()
    assert json.loads((tmp_path / "checksums.json").read_text())[FILENAME]["sha256"] == SHA256

    again = io.StringIO()
    assert weights.fetch("voc-fcn32s", cache_dir=tmp_path, policy=FAST, progress=False, log=again) == path
    assert again.getvalue() == ""
    assert len(server.requests_for(f"/dl/{FILENAME}")) == 1
    result = weights.verify("voc-fcn32s", cache_dir=tmp_path)
    assert result.sha256 == SHA256 and any("recorded" in c for c in result.checked)


def test_an_empty_or_broken_file_in_the_cache_never_gets_its_checksum_pinned(monkeypatch, server, tmp_path):
    """Without a published checksum the first file's sha256 becomes the reference: an empty (or
    not-a-caffemodel) file already at the cache path is refused and recorded nowhere, so the real
    download that replaces it is accepted and recorded."""
    _serve_record(monkeypatch, server)
    for broken in (b"", b"<html>502 Bad Gateway</html>"):
        (tmp_path / FILENAME).write_bytes(broken)
        with pytest.raises(weights.DownloadError, match="not a caffemodel, so no checksum was recorded"):
            weights.fetch("voc-fcn32s", cache_dir=tmp_path, policy=FAST, progress=False, log=io.StringIO())
        assert FILENAME not in read_checksums(tmp_path)
        (tmp_path / FILENAME).unlink()
    path = weights.fetch("voc-fcn32s", cache_dir=tmp_path, policy=FAST, progress=False, log=io.StringIO())
    assert path.read_bytes() == BODY and read_checksums(tmp_path)[FILENAME]["sha256"] == SHA256


def test_later_download_is_checked_against_the_recorded_sha256(monkeypatch, server, tmp_path):
    record = _serve_record(monkeypatch, server)
    weights.fetch("voc-fcn32s", cache_dir=tmp_path, policy=FAST, progress=False, log=io.StringIO())
    (tmp_path / FILENAME).unlink()
    server.route(f"/dl/{FILENAME}", Route(body=BODY[::-1]))  # the host now serves other bytes
    with pytest.raises(weights.ChecksumMismatch) as info:
        weights.fetch(record.name, cache_dir=tmp_path, policy=FAST, progress=False)
    message = str(info.value)
    assert f"expected sha256 {SHA256}" in message and "recorded at the first download" in message
    assert not (tmp_path / FILENAME).exists()


def test_verify_catches_a_corrupted_cached_file(monkeypatch, server, tmp_path):
    _serve_record(monkeypatch, server)
    path = weights.fetch("voc-fcn32s", cache_dir=tmp_path, policy=FAST, progress=False, log=io.StringIO())
    path.write_bytes(BODY[:-1] + b"\x00")
    with pytest.raises(weights.ChecksumMismatch, match=f"expected sha256 {SHA256}"):
        weights.verify("voc-fcn32s", cache_dir=tmp_path)


def test_published_sha1_is_enforced(monkeypatch, server, tmp_path):
    good = _serve_record(monkeypatch, server, sha1=hashlib.sha1(BODY).hexdigest())
    weights.fetch(good.name, cache_dir=tmp_path, policy=FAST, progress=False)
    assert (tmp_path / FILENAME).read_bytes() == BODY
    assert read_checksums(tmp_path)[FILENAME]["published"] is True


def test_a_mirror_url_of_a_registry_file_gets_the_published_checksum(server, tmp_path):
    # fcn8s-heavy-pascal.caffemodel has a published sha1; a mirror serving other bytes is refused
    server.route("/mirror/fcn8s-heavy-pascal.caffemodel", Route(body=BODY))
    with pytest.raises(weights.ChecksumMismatch) as info:
        weights.fetch(server.url("/mirror/fcn8s-heavy-pascal.caffemodel"), cache_dir=tmp_path, policy=FAST,
                      progress=False)
    message = str(info.value)
    assert "expected sha1 c449ea74dd7d83751d1357d6a8c323fcf4038962" in message
    assert f"got {hashlib.sha1(BODY).hexdigest()}" in message
    assert list(tmp_path.glob("fcn8s*")) == []


def _dead_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_host_down_names_the_url_the_mirrors_and_where_to_put_a_manual_download(monkeypatch, tmp_path):
    port = _dead_port()
    record = dataclasses.replace(weights.get("voc-fcn16s"), url=f"http://127.0.0.1:{port}/fcn16s-heavy-pascal.caffemodel",
                                 mirrors=(f"http://127.0.0.1:{port}/m1/fcn16s-heavy-pascal.caffemodel",))
    monkeypatch.setitem(registry.RECORDS, "voc-fcn16s", record)
    monkeypatch.setenv("FCN_PORT_MIRRORS", f"http://127.0.0.1:{port}/m2/")
    with pytest.raises(weights.DownloadError) as info:
        weights.fetch("voc-fcn16s", cache_dir=tmp_path, policy=FAST, progress=False)
    message = str(info.value)
    assert "\n" not in message
    for url in record.urls + (f"http://127.0.0.1:{port}/m2/fcn16s-heavy-pascal.caffemodel",):
        assert url in message
    assert str(tmp_path / "fcn16s-heavy-pascal.caffemodel") in message


def test_environment_mirror_is_used_after_the_official_url_fails(monkeypatch, server, tmp_path):
    record = _serve_record(monkeypatch, server)
    server.route(f"/dl/{FILENAME}", Route(status=404))
    server.route(f"/copy/{FILENAME}", Route(body=BODY))
    monkeypatch.setenv("FCN_PORT_MIRRORS", server.url("/copy"))
    path = weights.fetch(record.name, cache_dir=tmp_path, policy=FAST, progress=False, log=io.StringIO())
    assert path.read_bytes() == BODY
    assert read_checksums(tmp_path)[FILENAME]["url"] == server.url(f"/copy/{FILENAME}")


def test_fetch_url_into_dest_with_an_explicit_sha256(server, tmp_path):
    server.route("/files/any.bin", Route(body=BODY))
    dest = tmp_path / "elsewhere"
    path = weights.fetch(server.url("/files/any.bin"), sha256=SHA256, dest=dest, cache_dir=tmp_path / "cache",
                         policy=FAST, progress=False)
    assert path == dest / "any.bin" and path.read_bytes() == BODY
    with pytest.raises(weights.ChecksumMismatch, match=f"got {SHA256}"):
        weights.fetch(server.url("/files/any.bin"), sha256="ab" * 32, dest=tmp_path / "other",
                      cache_dir=tmp_path / "cache", policy=FAST, progress=False)
    assert not (tmp_path / "other" / "any.bin").exists()


def test_url_without_a_file_name_is_refused(tmp_path):
    with pytest.raises(weights.DownloadError, match="file name"):
        weights.fetch("http://127.0.0.1:9/", cache_dir=tmp_path)


def test_verify_a_file_by_path_and_missing_things(tmp_path):
    path = tmp_path / "x.bin"
    path.write_bytes(BODY)
    assert weights.verify(str(path), sha256=SHA256).checked
    assert weights.verify(str(path)).checked == ()
    with pytest.raises(weights.ChecksumMismatch):
        weights.verify(str(path), sha256="0" * 64)
    with pytest.raises(weights.DownloadError, match="not downloaded"):
        weights.verify("voc-fcn8s", cache_dir=tmp_path)
    with pytest.raises(weights.DownloadError, match="no such file"):
        weights.verify(str(tmp_path / "nope.caffemodel"))


def test_cache_dir_precedence(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("FCN_PORT_CACHE", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    assert cache_dir() == tmp_path / "home" / ".cache" / "fcn-port"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "fcn-port"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/ignored")  # the XDG spec says to ignore relative paths
    assert cache_dir() == tmp_path / "home" / ".cache" / "fcn-port"
    monkeypatch.setenv("FCN_PORT_CACHE", str(tmp_path / "env"))
    assert cache_dir() == tmp_path / "env"
    assert cache_dir(tmp_path / "flag") == tmp_path / "flag"
    assert weights.cached_path("voc-fcn8s") == tmp_path / "env" / "fcn8s-heavy-pascal.caffemodel"


def test_load_refuses_a_net_without_weights():
    with pytest.raises(weights.NotReleasedError):
        weights.load("nyud-fcn32s-color-d")


def test_is_url():
    assert weights.is_url("http://x/y.caffemodel") and weights.is_url("https://x/y")
    assert not weights.is_url("voc-fcn8s") and not weights.is_url(str(Path("/tmp/x.caffemodel")))
