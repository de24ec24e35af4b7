"""The fuzz harness (tests/fuzz/harness.py) in CI: a short seeded run per target, and proof that
the harness catches each kind of finding. The property: a reader returns or raises
CaffeFormatError with a one-line message; load_caffe returns or raises one of the ValueError
classes of converters.errors; never another exception, a hang or a huge allocation. Longer runs:
tools/fuzz.py (tools/README.md)."""

from __future__ import annotations

import pytest
from fuzz.harness import SELFTEST, TARGETS, Worker, cases, fuzz, nth_case

# (target, cases): about a minute in all on the 2-core CI machine, torch import included
SHORT_RUNS = [
    ("text", 1200), ("binary", 1200), ("hdf5", 250), ("load", 100), ("solver", 300), ("state", 300),
    ("params", 300), ("solvedata", 200), ("vocdata", 200), ("runjson", 40),
]


@pytest.mark.slow
@pytest.mark.parametrize(("target", "count"), SHORT_RUNS, ids=[t for t, _ in SHORT_RUNS])
def test_seeded_fuzz_run_finds_no_crash_hang_or_blow_up(target: str, count: int) -> None:
    report = fuzz(target, seed=20261202, max_cases=count)
    assert report.cases == count
    assert not report.findings, report.summary()
    assert report.refused < count  # the mutator still makes inputs the target accepts


def test_case_streams_are_reproducible_from_the_seed() -> None:
    for target in TARGETS:
        first = [data for _, data in zip(range(5), cases(target, 3), strict=False)]
        assert first == [data for _, data in zip(range(5), cases(target, 3), strict=False)]
        assert nth_case(target, 3, 4) == first[4]
        assert first != [data for _, data in zip(range(5), cases(target, 4), strict=False)]


@pytest.fixture(scope="module")
def worker() -> Worker:
    handle = Worker(memory_mb=1024, light=True)
    yield handle
    handle.stop()


@pytest.mark.parametrize(
    ("data", "problem"),
    [(b"keyerror", "not one of the project's error classes"), (b"multiline", "not one line"),
     (b"allocate", "MemoryError"), (b"hang", "no answer within"), (b"die", "worker died")],
)  # fmt: skip
def test_the_harness_catches_each_kind_of_finding(worker: Worker, data: bytes, problem: str) -> None:
    result = worker.run("selftest", data, SELFTEST.timeout_s)
    assert result["status"] == "finding"
    assert problem in result["problem"] + result["error"]
    assert worker.run("selftest", b"refuse", SELFTEST.timeout_s)["status"] == "refused"  # restarted
    assert worker.run("selftest", b"fine", SELFTEST.timeout_s)["status"] == "ok"
