"""A Ctrl-C while a ``python -m`` command is still importing (torch takes a while) exits with
status 130 and no traceback, as a Ctrl-C during the command does (issue 21)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

# A stand-in numpy that the first project import reaches: it delivers a real SIGINT to its own
# process while the package is importing, then waits for the signal to act.
SHIM = "import os, signal, time\nos.kill(os.getpid(), signal.SIGINT)\ntime.sleep(30)\n"


@pytest.fixture
def ctrl_c_while_importing(tmp_path: Path) -> dict[str, str]:
    (tmp_path / "numpy").mkdir()
    (tmp_path / "numpy" / "__init__.py").write_text(SHIM)
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(REPO)])}


@pytest.mark.parametrize(
    "module", ["converters.caffe2torch", "converters.train", "reproduce.train", "eval.voc", "weights"]
)
def test_a_ctrl_c_while_python_m_imports_exits_130_without_a_traceback(
    module: str, ctrl_c_while_importing: dict[str, str]
) -> None:
    done = subprocess.run(
        [sys.executable, "-m", module, "--help"], cwd=REPO, env=ctrl_c_while_importing,
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode in (130, -signal.SIGINT), done.stderr
    assert done.stderr == "" and done.stdout == ""


def test_importing_the_packages_as_a_library_leaves_the_interpreters_exception_hook_alone() -> None:
    code = (
        "import sys; hook = sys.excepthook; import converters, weights, eval, reproduce;"
        " print(sys.excepthook is hook)"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.stdout.strip() == "True", done.stderr
