"""python -m weights as a subprocess: offline list/show/path, fetch from a local server, verify, errors."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import caffemodel_bytes
from tests.httpserver import LocalHTTPServer, Route

REPO = Path(__file__).resolve().parent.parent
BODY = caffemodel_bytes(3, 200_003)
SHA256 = hashlib.sha256(BODY).hexdigest()

# Runs ``python -m weights`` with every socket connection refused: proof that a command is offline.
_OFFLINE = """
import runpy, socket, sys
def refuse(*args, **kwargs):
    raise OSError("network disabled by the test")
socket.socket.connect = refuse
socket.socket.connect_ex = refuse
socket.create_connection = refuse
sys.argv = ["weights"] + sys.argv[1:]
runpy.run_module("weights", run_name="__main__")
"""


def run(*args: str, cache: Path | None = None, offline: bool = False, env: dict | None = None):
    environment = {k: v for k, v in os.environ.items() if k not in ("FCN_PORT_CACHE", "FCN_PORT_MIRRORS")}
    environment.update(env or {})
    if cache is not None:
        environment["FCN_PORT_CACHE"] = str(cache)
    command = [sys.executable, "-c", _OFFLINE, *args] if offline else [sys.executable, "-m", "weights", *args]
    return subprocess.run(command, cwd=REPO, env=environment, capture_output=True, text=True, timeout=60)


def one_line_error(result) -> str:
    assert result.returncode == 2, (result.stdout, result.stderr)
    text = result.stderr.strip()
    assert text.startswith("error: ") and "\n" not in text and "Traceback" not in text, text
    return text


@pytest.fixture
def server():
    with LocalHTTPServer() as srv:
        yield srv


@pytest.mark.parametrize("command", [[], ["list"], ["show"], ["fetch"], ["verify"], ["path"]])
def test_help(command):
    result = run(*command, "--help")
    assert result.returncode == 0 and "usage: python -m weights" in result.stdout


def test_list_and_path_work_offline(tmp_path):
    result = run("list", cache=tmp_path, offline=True)
    assert result.returncode == 0, result.stderr
    assert f"cache: {tmp_path}" in result.stdout
    header, *rows = result.stdout.splitlines()[1:]
    assert header.split() == ["NAME", "STATE", "CHECKSUM", "TITLE"]
    lines = {line.split()[0]: line for line in rows}
    assert len(lines) == 18 and "not cached" in lines["voc-fcn8s"] and "sha1 published" in lines["voc-fcn8s"]
    assert "no released weights" in lines["nyud-fcn32s-color-d"]

    (tmp_path / "fcn8s-heavy-pascal.caffemodel").write_bytes(b"x" * 2048)
    listing = json.loads(run("list", "--json", cache=tmp_path, offline=True).stdout)
    row = next(r for r in listing["weights"] if r["name"] == "voc-fcn8s")
    assert row["cached"] and row["size"] == 2048
    assert row["path"] == str(tmp_path / "fcn8s-heavy-pascal.caffemodel")

    path = run("path", "voc-fcn16s", cache=tmp_path, offline=True)
    assert path.returncode == 0 and path.stdout.strip() == str(tmp_path / "fcn16s-heavy-pascal.caffemodel")
    other = tmp_path / "flag"
    flagged = run("path", "googlenet", "--cache-dir", str(other), cache=tmp_path, offline=True)
    assert flagged.stdout.strip() == str(other / "bvlc_googlenet.caffemodel")
    assert run("path", "voc-fcn16s", "--exists", cache=tmp_path, offline=True).returncode == 1
    assert run("path", "voc-fcn8s", "--exists", cache=tmp_path, offline=True).returncode == 0


def test_show_is_offline_and_complete(tmp_path):
    result = run("show", "siftflow-fcn16s", cache=tmp_path, offline=True)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "http://dl.caffe.berkeleyvision.org/siftflow-fcn16s-heavy.caffemodel" in out
    assert "score_sem (semantic, 33 classes)" in out and "score_geo (geometric, 3 classes)" in out
    assert "mean_iu 39.5" in out and "Table 5" in out


def test_fetch_from_a_local_server_then_verify(server, tmp_path):
    server.route("/w/model.caffemodel", Route(body=BODY, drop_after=70_000))
    url = server.url("/w/model.caffemodel")
    result = run("fetch", url, "--quiet", cache=tmp_path)
    assert result.returncode == 0, result.stderr
    path = tmp_path / "model.caffemodel"
    assert result.stdout.strip() == str(path) and path.read_bytes() == BODY
    assert "no published checksum" in result.stderr and SHA256 in result.stderr
    assert server.requests_for("/w/model.caffemodel") == [None, "bytes=70000-"]

    verified = run("verify", str(path), "--sha256", SHA256, cache=tmp_path)
    assert verified.returncode == 0 and verified.stdout.startswith("OK ") and SHA256 in verified.stdout
    path.write_bytes(BODY[:-3])
    error = one_line_error(run("verify", str(path), "--sha256", SHA256, cache=tmp_path))
    assert f"expected sha256 {SHA256}" in error


def test_fetch_with_a_wrong_sha256_leaves_nothing(server, tmp_path):
    server.route("/w/a.bin", Route(body=BODY))
    error = one_line_error(run("fetch", server.url("/w/a.bin"), "--sha256", "f" * 64, "-q",
                               "--dest", str(tmp_path / "d"), cache=tmp_path))
    assert "f" * 64 in error and SHA256 in error
    assert list((tmp_path / "d").glob("a.bin*")) == []


def test_fetch_404_is_one_line(server, tmp_path):
    server.route("/gone.caffemodel", Route(status=404))
    error = one_line_error(run("fetch", server.url("/gone.caffemodel"), "-q", cache=tmp_path))
    assert server.url("/gone.caffemodel") in error and "404" in error
    assert str(tmp_path / "gone.caffemodel") in error


@pytest.mark.parametrize(("args", "expected"), [
    (["path", "voc-fcn9s"], "did you mean voc-fcn8s"),
    (["fetch", "alexnet"], "unknown weights 'alexnet'"),
    (["fetch", "voc-fcn8s", "--sha256", "xyz"], "64 hex digits"),
    (["fetch", "nyud-fcn32s-color-d"], "no released weights"),
    (["verify", "voc-fcn8s"], "is not downloaded"),
    (["bogus"], "invalid choice"),
    (["fetch", "voc-fcn8s", "--retries", "many"], "invalid int value"),
])
def test_bad_input_exits_2_with_one_line(tmp_path, args, expected):
    assert expected in one_line_error(run(*args, cache=tmp_path, offline=True))


def test_fetch_with_a_wrong_sha256_keeps_the_users_file_and_does_not_create_dest(tmp_path):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "a.bin").write_bytes(BODY)
    url = "http://nonexistent.invalid/a.bin"
    result = run("fetch", url, "--sha256", "f" * 64, "-q", "--dest", str(folder), cache=tmp_path)
    warning, error = result.stderr.strip().splitlines()  # the checksum warning, then the error
    assert result.returncode == 2 and warning.startswith("warning: ") and error.startswith("error: ")
    assert "nonexistent.invalid not found" in error and "left as it was" in error
    assert (folder / "a.bin").read_bytes() == BODY
    one_line_error(run("fetch", url, "-q", "--dest", str(tmp_path / "no" / "dir"), cache=tmp_path))
    assert not (tmp_path / "no").exists()


def test_ctrl_c_during_a_fetch_exits_130_quietly_and_keeps_the_part_file(server, tmp_path):
    import signal
    import time

    server.route("/slow.bin", Route(body=BODY, stall_after=50_000, stall=30.0))
    environment = {**os.environ, "FCN_PORT_CACHE": str(tmp_path)}
    command = [sys.executable, "-m", "weights", "fetch", server.url("/slow.bin"), "-q"]
    child = subprocess.Popen(command, cwd=REPO, env=environment, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    part = tmp_path / "slow.bin.part"
    deadline = time.monotonic() + 30
    while not (part.exists() and part.stat().st_size >= 50_000) and time.monotonic() < deadline:
        time.sleep(0.05)
    child.send_signal(signal.SIGINT)
    out, err = child.communicate(timeout=30)
    assert child.returncode == 130 and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert "resumes next time" in err and not (tmp_path / "slow.bin").exists()


def test_a_closed_stdout_ends_list_quietly(tmp_path):
    environment = {**os.environ, "FCN_PORT_CACHE": str(tmp_path)}
    child = subprocess.Popen([sys.executable, "-m", "weights", "list"], cwd=REPO, env=environment,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    child.stdout.close()  # like `| head -0`: the reader is gone before the first line
    err = child.stderr.read()
    child.wait(timeout=60)
    assert child.returncode == 141 and err == ""


def test_wrong_kinds_of_path_are_refused_in_one_line(tmp_path) -> None:
    photo = REPO / "reproduce" / "data" / "image.jpg"
    cases = {
        ("verify", str(photo)): "not a caffemodel, nothing to verify",
        ("verify", str(tmp_path)): "is a folder",
        ("list", "--cache-dir", str(photo)): "is a file, not a folder",
        ("path", "voc-fcn8s", "--cache-dir", str(photo)): "is a file, not a folder",
        ("fetch", "voc-fcn8s", "--dest", str(photo)): "is a file, not a folder",
    }
    for args, expected in cases.items():
        done = run(*args, offline=True)
        assert done.returncode == 2, (args, done.stdout, done.stderr)
        assert done.stderr.startswith("error: ") and done.stderr.count("\n") == 1 and expected in done.stderr
        assert done.stdout == ""
    done = run("list", cache=photo, offline=True)  # the same through $FCN_PORT_CACHE
    assert done.returncode == 2 and "FCN_PORT_CACHE" in done.stderr and "not a folder" in done.stderr


def test_show_says_the_size_once() -> None:
    lines = run("show", "voc-fcn8s", offline=True).stdout.splitlines()
    assert "size:      about 513 MiB (published)" in lines
    assert "size:      about 513 MiB (estimated from the parameter count)" in run(
        "show", "voc-fcn32s", offline=True).stdout.splitlines()
