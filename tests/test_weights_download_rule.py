"""The one download rule (``weights.api.obtain``): nothing is downloaded unasked. ``--download``
fetches; without it a terminal is asked ``Download NAME weights (about N MiB) to DIR? [y/N]`` and
anything else gets one line naming the cache and the flag. Registry records are served by a real
HTTP server on 127.0.0.1 (their URLs swapped), so a download that should not happen would show in
its request log. Failed downloads leave no ``.lock`` file in the destination or the cache."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

import weights
from tests.conftest import caffemodel_bytes
from tests.httpserver import LocalHTTPServer, Route
from weights import api, registry
from weights.download import RetryPolicy

REPO = Path(__file__).resolve().parent.parent
BODY = caffemodel_bytes(11, 120_001)
SHA256 = hashlib.sha256(BODY).hexdigest()
FAST = RetryPolicy(retries=0, backoff=0.01, max_backoff=0.02, connect_timeout=2.0, read_timeout=2.0)
NAME, FILENAME = "voc-fcn32s", "fcn32s-heavy-pascal.caffemodel"


@pytest.fixture
def served(monkeypatch):
    """voc-fcn32s pointing at a local server that has its file; yields (server, path on the server)."""
    with LocalHTTPServer() as server:
        path = f"/dl/{FILENAME}"
        server.route(path, Route(body=BODY))
        local = dataclasses.replace(weights.get(NAME), url=server.url(path))
        monkeypatch.setitem(registry.RECORDS, NAME, local)
        yield server, path


def _terminal(monkeypatch, answer: str) -> io.StringIO:
    """A terminal on stdin and stderr that answers ``answer``; returns what was written to stderr."""
    prompt = io.StringIO()
    monkeypatch.setattr(api, "_interactive", lambda: True)
    monkeypatch.setattr(sys, "stdin", io.StringIO(answer))
    monkeypatch.setattr(sys, "stderr", prompt)
    return prompt


def test_without_download_and_without_a_terminal_a_missing_model_is_one_line_naming_cache_and_flag(
    served, tmp_path
) -> None:
    server, path = served
    with pytest.raises(weights.NotDownloadedError) as info:
        weights.obtain(NAME, cache_dir=tmp_path)
    message = str(info.value)
    assert "\n" not in message and f"not in the cache {tmp_path}" in message
    assert "add --download (or give the caffemodel path)" in message and "about 513 MiB" in message
    assert server.requests_for(path) == [] and list(tmp_path.iterdir()) == []


def test_on_a_terminal_the_user_is_asked_first_and_no_means_nothing_is_downloaded(
    served, tmp_path, monkeypatch
) -> None:
    server, path = served
    prompt = _terminal(monkeypatch, "\n")  # Enter: the default, N
    with pytest.raises(weights.NotDownloadedError):
        weights.obtain(NAME, cache_dir=tmp_path)
    assert prompt.getvalue() == f"Download {NAME} weights (about 513 MiB) to {tmp_path}? [y/N] "
    assert server.requests_for(path) == []


def test_on_a_terminal_yes_downloads_and_the_next_call_takes_the_verified_cached_file(
    served, tmp_path, monkeypatch
) -> None:
    server, path = served
    _terminal(monkeypatch, "y\n")
    got = weights.obtain(NAME, cache_dir=tmp_path, progress=False)
    assert got == tmp_path / FILENAME and got.read_bytes() == BODY
    monkeypatch.setattr(api, "_interactive", lambda: False)
    assert weights.obtain(NAME, cache_dir=tmp_path) == got  # cached: no question, no request
    assert len(server.requests_for(path)) == 1


def test_download_true_fetches_without_asking_and_false_never_does(served, tmp_path, monkeypatch) -> None:
    server, path = served
    monkeypatch.setattr(api, "_interactive", lambda: True)
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))  # a question would read nothing: no
    with pytest.raises(weights.NotDownloadedError, match="pass download=True"):
        weights.obtain(NAME, download=False, cache_dir=tmp_path)
    assert server.requests_for(path) == []
    assert weights.obtain(NAME, download=True, cache_dir=tmp_path, progress=False).read_bytes() == BODY


def test_weights_load_with_download_false_refuses_in_one_line_without_touching_the_network(
    served, tmp_path
) -> None:
    server, path = served
    with pytest.raises(weights.NotDownloadedError, match="not in the cache"):
        weights.load(NAME, download=False, cache_dir=tmp_path)
    assert server.requests_for(path) == []


def test_a_failed_download_leaves_no_lock_file_in_the_destination_or_the_cache(tmp_path) -> None:
    with LocalHTTPServer() as server:
        server.route("/x/mine.caffemodel", Route(status=404))
        dest, cache = tmp_path / "dest", tmp_path / "cache"
        dest.mkdir()
        cache.mkdir()
        for where in ({"dest": dest, "cache_dir": cache}, {"cache_dir": cache}):
            with pytest.raises(weights.DownloadError):
                weights.fetch(server.url("/x/mine.caffemodel"), policy=FAST, progress=False, **where)
    left = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*"))
    assert left == ["cache", "dest"]


def test_a_successful_download_leaves_only_the_weights_and_the_checksum_record(served, tmp_path) -> None:
    weights.fetch(NAME, cache_dir=tmp_path, policy=FAST, progress=False, log=io.StringIO())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checksums.json", FILENAME]


def _command(module: str, *args: str, cache: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("FCN_PORT_MIRRORS",)}
    env["FCN_PORT_CACHE"] = str(cache)
    return subprocess.run([sys.executable, "-m", module, *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=120, stdin=subprocess.DEVNULL)


@pytest.mark.parametrize("module", ["reproduce.segment", "reproduce.demo", "eval.voc"])
def test_a_command_without_download_stops_with_one_line_and_says_the_rule_in_its_help(
    module, tmp_path
) -> None:
    from tests.vocgen import write_voc

    photo = REPO / "reproduce" / "data" / "image.jpg"
    write_voc(tmp_path / "voc", ["2011_000001"])
    args = {
        "reproduce.segment": ["--model", "voc-fcn8s", str(photo), "-o", str(tmp_path / "out")],
        "reproduce.demo": ["--output", str(tmp_path / "demo.png")],
        "eval.voc": ["--model", "voc-fcn8s", "--voc-root", str(tmp_path / "voc" / "VOC2011"), "--split",
                     "val2011", "--json", str(tmp_path / "out")],
    }[module]
    done = _command(module, *args, cache=tmp_path / "cache")
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("error: voc-fcn8s weights (")
    assert f"not in the cache {tmp_path / 'cache'}; add --download" in done.stderr
    assert not (tmp_path / "cache").exists() and not (tmp_path / "out").exists()
    help_text = " ".join(_command(module, "--help", cache=tmp_path).stdout.split())
    assert "--download" in help_text and "nothing is downloaded unasked" in help_text
