"""weights.download against a real HTTP server on 127.0.0.1 (tests/httpserver.py), no mocks."""

from __future__ import annotations

import hashlib
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import caffemodel_bytes
from tests.httpserver import LocalHTTPServer, Route
from weights.download import ChecksumMismatch, DownloadError, RetryPolicy, download, normalize_hex, part_path

REPO = Path(__file__).resolve().parent.parent
FAST = RetryPolicy(retries=2, backoff=0.01, max_backoff=0.05, connect_timeout=2.0, read_timeout=2.0)
BODY = caffemodel_bytes(1234, 1_000_003)
SHA256 = hashlib.sha256(BODY).hexdigest()
SHA1 = hashlib.sha1(BODY).hexdigest()


@pytest.fixture
def server():
    with LocalHTTPServer() as srv:
        yield srv


def test_full_download_verifies_and_then_uses_the_cached_file(server, tmp_path):
    server.route("/w.caffemodel", Route(body=BODY))
    dest = tmp_path / "w.caffemodel"
    url = server.url("/w.caffemodel")
    result = download(url, dest, sha256=SHA256, sha1=SHA1, policy=FAST, progress=False)
    assert dest.read_bytes() == BODY
    assert result.downloaded and result.sha256 == SHA256 and result.url == server.url("/w.caffemodel")
    assert not part_path(dest).exists()
    again = download(server.url("/w.caffemodel"), dest, sha256=SHA256, policy=FAST, progress=False)
    assert not again.downloaded
    assert len(server.requests_for("/w.caffemodel")) == 1


def test_dropped_connection_is_resumed_with_a_range_request(server, tmp_path):
    server.route("/w", Route(body=BODY, drop_after=300_000))
    dest = tmp_path / "w.bin"
    download(server.url("/w"), dest, sha256=SHA256, policy=FAST, progress=False)
    assert dest.read_bytes() == BODY
    assert server.requests_for("/w") == [None, "bytes=300000-"]


def test_interrupted_download_leaves_only_a_part_file_and_the_next_call_resumes(server, tmp_path):
    # the connection drops after 400000 bytes, then the host answers 502 until it is "repaired"
    server.route("/w", Route(body=BODY, drop_after=400_000, fail_from=1, fail_status=502))
    dest = tmp_path / "w.bin"
    no_retry = RetryPolicy(retries=1, backoff=0.01, connect_timeout=2.0, read_timeout=2.0)
    with pytest.raises(DownloadError):
        download(server.url("/w"), dest, sha256=SHA256, policy=no_retry, progress=False)
    assert not dest.exists()
    assert part_path(dest).stat().st_size == 400_000
    server.route("/w", Route(body=BODY))
    download(server.url("/w"), dest, sha256=SHA256, policy=no_retry, progress=False)
    assert dest.read_bytes() == BODY and not part_path(dest).exists()
    assert server.requests_for("/w")[-1] == "bytes=400000-"


def test_server_without_range_support_restarts_from_zero(server, tmp_path):
    server.route("/w", Route(body=BODY, ranges=False, drop_after=250_000))
    dest = tmp_path / "w.bin"
    download(server.url("/w"), dest, sha256=SHA256, policy=FAST, progress=False)
    assert dest.read_bytes() == BODY


def test_404_is_not_retried_and_names_url_and_manual_path(server, tmp_path):
    server.route("/missing", Route(status=404))
    dest = tmp_path / "m.caffemodel"
    with pytest.raises(DownloadError) as info:
        download(server.url("/missing"), dest, policy=FAST, progress=False)
    message = str(info.value)
    assert "\n" not in message
    assert server.url("/missing") in message and "404" in message and str(dest) in message
    assert len(server.requests_for("/missing")) == 1
    assert not dest.exists()


def test_500_twice_then_success(server, tmp_path):
    server.route("/flaky", Route(body=BODY, fail_first=2))
    dest = tmp_path / "f.bin"
    download(server.url("/flaky"), dest, sha256=SHA256, policy=FAST, progress=False)
    assert dest.read_bytes() == BODY
    assert len(server.requests_for("/flaky")) == 3


def test_persistent_500_gives_up_after_the_retries(server, tmp_path):
    server.route("/down", Route(body=BODY, fail_first=100, fail_status=503))
    with pytest.raises(DownloadError, match="503"):
        download(server.url("/down"), tmp_path / "d.bin", policy=FAST, progress=False)
    assert len(server.requests_for("/down")) == FAST.retries + 1


def test_checksum_mismatch_removes_the_bytes_and_says_expected_and_got(server, tmp_path):
    server.route("/w", Route(body=BODY))
    dest = tmp_path / "w.bin"
    wrong = "0" * 64
    with pytest.raises(ChecksumMismatch) as info:
        download(server.url("/w"), dest, sha256=wrong, policy=FAST, progress=False)
    assert wrong in str(info.value) and SHA256 in str(info.value)
    assert not dest.exists() and not part_path(dest).exists()


def test_sha1_mismatch_is_caught_too(server, tmp_path):
    server.route("/w", Route(body=BODY))
    with pytest.raises(ChecksumMismatch, match=SHA1):
        download(server.url("/w"), tmp_path / "w.bin", sha1="1" * 40, policy=FAST, progress=False)


def test_redirect_is_followed(server, tmp_path):
    server.route("/new", Route(body=BODY))
    server.route("/old", Route(redirect_to=server.url("/new")))
    dest = tmp_path / "r.bin"
    result = download(server.url("/old"), dest, sha256=SHA256, policy=FAST, progress=False)
    assert dest.read_bytes() == BODY and result.url == server.url("/old")
    assert len(server.requests_for("/new")) == 1


def test_slow_server_hits_the_read_timeout(server, tmp_path):
    server.route("/slow", Route(body=BODY, delay=5.0))
    policy = RetryPolicy(retries=1, backoff=0.01, connect_timeout=0.3, read_timeout=0.3)
    start = time.monotonic()
    with pytest.raises(DownloadError, match="timed out"):
        download(server.url("/slow"), tmp_path / "s.bin", policy=policy, progress=False)
    assert time.monotonic() - start < 3.0
    assert len(server.requests_for("/slow")) == 2


def test_stall_in_the_middle_of_the_body_times_out_and_resumes(server, tmp_path):
    server.route("/stall", Route(body=BODY, stall_after=200_000, stall=5.0, fail_from=1))
    dest = tmp_path / "s.bin"
    policy = RetryPolicy(retries=0, backoff=0.01, connect_timeout=1.0, read_timeout=1.0)
    with pytest.raises(DownloadError, match="HTTP 500"):  # read timeout, resume, then the host fails
        download(server.url("/stall"), dest, sha256=SHA256, policy=policy, progress=False)
    assert not dest.exists()
    assert part_path(dest).stat().st_size == 200_000
    server.route("/stall", Route(body=BODY))
    download(server.url("/stall"), dest, sha256=SHA256, policy=FAST, progress=False)
    assert dest.read_bytes() == BODY
    assert server.requests_for("/stall")[-1] == "bytes=200000-"


def test_mirror_is_used_when_the_primary_fails(server, tmp_path):
    server.route("/primary", Route(status=404))
    server.route("/mirror", Route(body=BODY))
    result = download([server.url("/primary"), server.url("/mirror")], tmp_path / "m.bin", sha256=SHA256,
                      policy=FAST, progress=False)
    assert result.url == server.url("/mirror") and result.path.read_bytes() == BODY


def test_host_down_message_lists_every_url_and_the_manual_path(tmp_path):
    import socket

    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    urls = [f"http://127.0.0.1:{port}/a.caffemodel", f"http://127.0.0.1:{port}/mirror/a.caffemodel"]
    dest = tmp_path / "a.caffemodel"
    with pytest.raises(DownloadError) as info:
        download(urls, dest, policy=FAST, progress=False)
    message = str(info.value)
    assert "\n" not in message and all(url in message for url in urls) and str(dest) in message
    assert not dest.exists()


def test_cached_file_failing_its_checksum_is_downloaded_again(server, tmp_path):
    server.route("/w", Route(body=BODY))
    dest = tmp_path / "w.bin"
    dest.write_bytes(BODY[:1000])
    download(server.url("/w"), dest, sha256=SHA256, policy=FAST, progress=False)
    assert dest.read_bytes() == BODY


def test_bad_checksum_text_is_rejected():
    assert normalize_hex(SHA256.upper(), "sha256") == SHA256
    with pytest.raises(DownloadError, match="64 hex"):
        normalize_hex("abc", "sha256")


_CHILD = """
import sys
from weights.download import RetryPolicy, download
r = download(sys.argv[1], sys.argv[2], sha256=sys.argv[3], progress=False,
             policy=RetryPolicy(retries=2, backoff=0.01, connect_timeout=2, read_timeout=5))
print("downloaded" if r.downloaded else "cached")
"""


def test_two_processes_fetching_the_same_file_do_not_corrupt_it(server, tmp_path):
    # the body stalls half-way so that the two transfers would overlap without the lock
    server.route("/big", Route(body=BODY, stall_after=500_000, stall=0.6))
    dest = tmp_path / "big.caffemodel"
    args = [sys.executable, "-c", _CHILD, server.url("/big"), str(dest), SHA256]
    children = [subprocess.Popen(args, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                for _ in range(2)]
    outputs = [child.communicate(timeout=60) for child in children]
    assert [child.returncode for child in children] == [0, 0], outputs
    assert sorted(out.strip() for out, _ in outputs) == ["cached", "downloaded"]
    assert hashlib.sha256(dest.read_bytes()).hexdigest() == SHA256
    assert len(server.requests_for("/big")) == 1
    assert not part_path(dest).exists()


_KILLED_CHILD = """
import sys
from weights.download import RetryPolicy, download
download(sys.argv[1], sys.argv[2], progress=False,
         policy=RetryPolicy(retries=0, backoff=0.01, connect_timeout=2, read_timeout=30))
"""


def test_a_killed_download_leaves_no_file_and_the_next_fetch_resumes(server, tmp_path):
    server.route("/k", Route(body=BODY, stall_after=123_456, stall=30.0))
    dest = tmp_path / "k.caffemodel"
    child = subprocess.Popen([sys.executable, "-c", _KILLED_CHILD, server.url("/k"), str(dest)], cwd=REPO)
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if part_path(dest).exists() and part_path(dest).stat().st_size == 123_456:
                break
            time.sleep(0.02)
        else:
            raise AssertionError("the child never wrote the first 123456 bytes")
    finally:
        child.kill()  # SIGKILL: no cleanup code runs; the kernel releases the flock
        child.wait(timeout=10)
    assert not dest.exists()
    server.route("/k", Route(body=BODY))
    result = download(server.url("/k"), dest, sha256=SHA256, policy=FAST, progress=False)
    assert result.downloaded and dest.read_bytes() == BODY
    assert server.requests_for("/k")[-1] == "bytes=123456-"


_FETCH_CHILD = """
import sys
import weights
from weights.download import RetryPolicy
path = weights.fetch(sys.argv[1], cache_dir=sys.argv[2], progress=False,
                     policy=RetryPolicy(retries=2, backoff=0.01, connect_timeout=2, read_timeout=5))
print(path)
"""


def test_two_processes_fetching_without_a_checksum_record_one_consistent_sha256(server, tmp_path):
    import json

    server.route("/n/new.caffemodel", Route(body=BODY, stall_after=400_000, stall=0.5))
    args = [sys.executable, "-c", _FETCH_CHILD, server.url("/n/new.caffemodel"), str(tmp_path)]
    children = [subprocess.Popen(args, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                for _ in range(2)]
    outputs = [child.communicate(timeout=60) for child in children]
    assert [child.returncode for child in children] == [0, 0], outputs
    assert {out.strip() for out, _ in outputs} == {str(tmp_path / "new.caffemodel")}
    assert (tmp_path / "new.caffemodel").read_bytes() == BODY
    assert json.loads((tmp_path / "checksums.json").read_text())["new.caffemodel"]["sha256"] == SHA256
    assert len(server.requests_for("/n/new.caffemodel")) == 1


def test_progress_bar_goes_to_stderr(server, tmp_path, capsys):
    server.route("/p/bar.caffemodel", Route(body=BODY))
    download(server.url("/p/bar.caffemodel"), tmp_path / "bar.caffemodel", policy=FAST, progress=True)
    captured = capsys.readouterr()
    assert captured.out == "" and "bar.caffemodel" in captured.err


def test_a_stale_part_file_that_fails_the_checksum_is_downloaded_again_from_the_start(server, tmp_path):
    server.route("/s", Route(body=BODY))
    dest = tmp_path / "s.bin"
    part_path(dest).write_bytes(b"\xff" * 1000)  # left over from some other, older transfer
    result = download(server.url("/s"), dest, sha256=SHA256, policy=FAST, progress=False)
    assert result.downloaded and dest.read_bytes() == BODY
    assert server.requests_for("/s") == ["bytes=1000-", None]


def test_a_file_failing_a_wrong_checksum_stays_when_the_download_fails(server, tmp_path):
    dest = tmp_path / "good.caffemodel"
    dest.write_bytes(BODY)
    with pytest.raises(DownloadError) as offline:  # the user's file, a wrong checksum, no network
        download("http://nonexistent.invalid/good.caffemodel", dest, sha256="f" * 64, policy=FAST,
                 progress=False)
    assert dest.read_bytes() == BODY and "left as it was" in str(offline.value)
    server.route("/good.caffemodel", Route(body=BODY))
    with pytest.raises(ChecksumMismatch) as wrong:  # online: the download is wrong, the file stays
        download(server.url("/good.caffemodel"), dest, sha256="f" * 64, policy=FAST, progress=False)
    assert dest.read_bytes() == BODY and "left as it was" in str(wrong.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["good.caffemodel"]  # no .lock file left


def test_a_host_that_does_not_resolve_is_not_retried(tmp_path):
    slow = RetryPolicy(retries=4, backoff=1.0, max_backoff=30.0, connect_timeout=2.0, read_timeout=2.0)
    started = time.monotonic()
    with pytest.raises(DownloadError) as info:
        download("http://nonexistent.invalid/a.caffemodel", tmp_path / "a.caffemodel", policy=slow,
                 progress=False)
    assert time.monotonic() - started < 3.0  # retries would sleep 1 + 2 + 4 + 8 s
    assert "nonexistent.invalid not found" in str(info.value) and "attempts" not in str(info.value)


def test_folders_made_for_a_failed_download_are_removed(server, tmp_path):
    dest = tmp_path / "new" / "deeper" / "a.caffemodel"
    with pytest.raises(DownloadError):
        download("http://nonexistent.invalid/a.caffemodel", dest, policy=FAST, progress=False)
    assert list(tmp_path.iterdir()) == []
    server.route("/a.caffemodel", Route(body=BODY))
    download(server.url("/a.caffemodel"), dest, sha256=SHA256, policy=FAST, progress=False)
    assert dest.read_bytes() == BODY


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_downloaded_files_follow_the_umask(server, tmp_path, umask):
    server.route("/m.caffemodel", Route(body=BODY))
    old = os.umask(umask)
    try:
        download(server.url("/m.caffemodel"), tmp_path / "m.caffemodel", policy=FAST, progress=False)
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "m.caffemodel").stat().st_mode) == 0o666 & ~umask
