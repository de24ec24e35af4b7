"""The default graph keeps freed memory in the C heap, so a large blob's pages are not faulted in
again at every forward (converters.graph.heap); each case runs in a process of its own, since the
setting is the process's."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

# A 1x1 convolution whose input and output are 36 MB each: over glibc's 32 MB ceiling for blocks it
# serves from the heap on its own.
_FORWARDS = """
import resource, sys, torch
from converters import load_caffe, parse_text
from converters.graph import heap
text = '''
layer { name: "in" type: "Input" top: "data" input_param { shape { dim: 1 dim: 4 dim: 1500 dim: 1500 } } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "y"
        convolution_param { num_output: 4 kernel_size: 1 } }
'''
net = load_caffe(parse_text(text), None, optimize=sys.argv[1] == "default")
x = torch.rand(1, 4, 1500, 1500)
with torch.inference_mode():
    for _ in range(2):  # (the heap reaches the forward's pattern of blocks in two)
        net(data=x)
    faults = []
    for _ in range(FORWARDS):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        net(data=x)
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(sorted(faults)[len(faults) // 2], heap.kept())
"""

_OUTPUT_PAGES = 4 * 1500 * 1500 * 4 // 4096  # the convolution's output, in 4 KB pages
# Forwards counted, after two; the median forward's faults count: now and then glibc maps a block
# afresh in a later forward (in two processes of eight, one forward of eight took 17578 pages).
FORWARDS = 5

glibc = pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc's malloc only"
)


def _later_forwards(tmp_path: Path, graph: str, **env: str) -> tuple[int, str]:
    environment = {name: value for name, value in os.environ.items() if name != "FCN_PORT_KEEP_HEAP"}
    environment.update(FCN_PORT_CACHE=str(tmp_path), **env)
    out = subprocess.run(
        [sys.executable, "-c", _FORWARDS.replace("FORWARDS", str(FORWARDS)), graph],
        capture_output=True, text=True, env=environment, cwd=REPO, check=True, timeout=300,
    )  # fmt: skip
    faults, kept = out.stdout.split()
    return int(faults), kept


@glibc
def test_the_default_graphs_later_forward_faults_in_no_fresh_pages_for_a_blob_over_32_mb(tmp_path) -> None:
    faults, kept = _later_forwards(tmp_path, "default")
    assert kept == "True"
    assert faults < _OUTPUT_PAGES // 4, faults


@glibc
def test_with_the_heap_setting_turned_off_every_forward_maps_its_large_blob_afresh(tmp_path) -> None:
    """The same forward with FCN_PORT_KEEP_HEAP=0: the output's pages are faulted in again (what the
    setting saves, and the case the test above would fail on)."""
    faults, kept = _later_forwards(tmp_path, "default", FCN_PORT_KEEP_HEAP="0")
    assert kept == "False"
    assert faults >= _OUTPUT_PAGES, faults


@glibc
def test_the_plain_graph_leaves_malloc_as_it_is(tmp_path) -> None:
    faults, kept = _later_forwards(tmp_path, "plain")
    assert kept == "None"
    assert faults >= _OUTPUT_PAGES, faults


def test_keep_freed_memory_does_nothing_when_turned_off(monkeypatch) -> None:
    from converters.graph import heap

    monkeypatch.setattr(heap, "_state", None)
    monkeypatch.setenv(heap.KEEP_ENV, "0")
    assert heap.keep_freed_memory() is False
    assert heap.kept() is False
