"""The ``fcn-port`` distribution builds as a wheel that installs into a fresh virtualenv and works
from outside the source tree: every package imports from the installed copy, ``py.typed`` and the
package data are there, and the ``fcn-port`` console script runs.

The fresh virtualenv has no packages of its own: the wheel goes in with ``--no-deps`` and a ``.pth``
file points at this environment's site-packages for torch, numpy and the other dependencies (whose
``.pth`` files, including this checkout's editable install, are not processed from there)."""

from __future__ import annotations

import os
import shutil
import site
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
TOP_LEVEL = ("converters", "weights", "eval", "reproduce")


def _copy_sources(destination: Path) -> None:
    """The files the build reads, copied so that the build never writes into the checkout."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", "*.part")
    for name in TOP_LEVEL:
        shutil.copytree(REPO / name, destination / name, ignore=ignore)
    for name in ("pyproject.toml", "README.md", "NOTICE"):
        if (REPO / name).exists():
            shutil.copy2(REPO / name, destination / name)


def _run(command: list[str], cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    env["PIP_NO_INPUT"] = "1"
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{' '.join(command)}\n{result.stdout}\n{result.stderr}"
    return result


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> tuple[Path, Path, Path]:
    """(wheel, venv python, a working folder outside the source tree)."""
    root = tmp_path_factory.mktemp("wheel")
    source, dist, venv, work = root / "src", root / "dist", root / "venv", root / "work"
    for folder in (source, dist, work):
        folder.mkdir()
    _copy_sources(source)
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(dist),
          str(source)], root)
    wheel = next(dist.glob("fcn_port-*.whl"))
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], root)
    python = venv / "bin" / "python"
    purelib = Path(_run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                        work).stdout.strip())
    ours = sysconfig.get_paths()["purelib"]
    (purelib / "_fcn_port_test_dependencies.pth").write_text(
        "\n".join(dict.fromkeys([ours, *site.getsitepackages()])) + "\n"
    )
    _run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index", "-q",
          str(wheel)], root)
    return wheel, python, work


@pytest.mark.slow
def test_the_wheel_holds_every_package_with_py_typed_and_the_package_data(installed) -> None:
    wheel, _, _ = installed
    names = set(zipfile.ZipFile(wheel).namelist())
    for package in TOP_LEVEL:
        assert f"{package}/__init__.py" in names and f"{package}/py.typed" in names, package
    assert "reproduce/data/image.jpg" in names and "reproduce/data/output.png" in names
    assert any(n.startswith("eval/splits/") and n.endswith(".txt") for n in names)
    entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    assert "fcn-port = reproduce.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()


@pytest.mark.slow
def test_every_package_imports_from_the_installed_wheel_outside_the_source_tree(installed) -> None:
    wheel, python, work = installed
    packages = sorted(
        n.removesuffix("/__init__.py").replace("/", ".")
        for n in zipfile.ZipFile(wheel).namelist()
        if n.endswith("/__init__.py")
    )
    script = (
        "import importlib, sys\n"
        f"for name in {packages!r}:\n"
        "    module = importlib.import_module(name)\n"
        "    print(name, module.__file__)\n"
    )
    lines = _run([str(python), "-c", script], work).stdout.splitlines()
    assert len(lines) == len(packages) >= len(TOP_LEVEL)
    venv = python.parent.parent.resolve()
    for line in lines:
        name, path = line.split(" ", 1)
        assert Path(path).resolve().is_relative_to(venv), f"{name} imported from {path}, not the wheel"


@pytest.mark.slow
def test_the_installed_fcn_port_command_lists_the_commands_and_runs_one(installed) -> None:
    _, python, work = installed
    script = python.parent / "fcn-port"
    listing = _run([str(script), "--help"], work).stdout
    for command in ("convert", "inspect", "weights", "eval", "timing", "segment", "train"):
        assert f"  {command} " in listing, command
    names = _run([str(script), "weights", "list"], work).stdout
    assert "voc-fcn8s" in names
    assert "python -m reproduce.segment" in _run([str(python), "-m", "converters"], work).stdout
