"""converters.atomic: output files respect the umask, name the user's path in errors, leave nothing
partial, and a destination is checked before the work starts."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from converters.atomic import atomic_path, atomic_write, check_writable, current_umask
from converters.errors import UsageError


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture(params=[0o022, 0o027])
def umask(request):
    old = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(old)


def test_new_files_follow_the_umask(tmp_path, umask) -> None:
    assert current_umask() == umask
    with atomic_write(tmp_path / "a.bin") as handle:
        handle.write(b"x")
    with atomic_path(tmp_path / "b.pt") as path:
        Path(path).write_bytes(b"y")
    assert _mode(tmp_path / "a.bin") == _mode(tmp_path / "b.pt") == 0o666 & ~umask


def test_a_replaced_file_keeps_its_mode(tmp_path, umask) -> None:
    target = tmp_path / "shared.json"
    target.write_text("{}")
    target.chmod(0o664)
    with atomic_write(target, "w") as handle:
        handle.write("[]")
    assert target.read_text() == "[]" and _mode(target) == 0o664


def test_an_error_or_ctrl_c_inside_leaves_nothing_and_the_old_file_intact(tmp_path) -> None:
    target = tmp_path / "out.safetensors"
    target.write_bytes(b"old")
    for error in (ValueError("bad"), KeyboardInterrupt()):
        with pytest.raises(type(error)), atomic_write(target) as handle:
            handle.write(b"partial")
            raise error
        with pytest.raises(type(error)), atomic_path(target) as path:
            Path(path).write_bytes(b"partial")
            raise error
    assert target.read_bytes() == b"old" and sorted(p.name for p in tmp_path.iterdir()) == ["out.safetensors"]


def test_atomic_path_keeps_the_suffix_for_writers_that_read_it(tmp_path) -> None:
    with atomic_path(tmp_path / "net.pt") as path:
        assert path.endswith(".pt") and Path(path).parent == tmp_path
        assert Path(path).name.startswith(".net.pt.")


def test_write_errors_name_the_users_path_not_the_temporary_file() -> None:
    with pytest.raises(OSError) as info, atomic_write("/proc/x.safetensors") as handle:
        handle.write(b"x")
    assert info.value.filename == "/proc/x.safetensors" and ".part" not in str(info.value)


def test_the_destination_is_checked_before_the_work(tmp_path) -> None:
    check_writable(tmp_path / "fine.pt")
    assert list(tmp_path.iterdir()) == []  # the probe file is gone
    missing = f"cannot write {tmp_path}/no/x.pt: the folder {tmp_path}/no does not exist"
    with pytest.raises(UsageError, match=missing):
        check_writable(tmp_path / "no" / "x.pt")
    with pytest.raises(UsageError, match="is a folder"):
        check_writable(tmp_path, "-o")
    with pytest.raises(UsageError) as info:
        check_writable("/proc/x.safetensors")
    assert str(info.value).startswith("cannot write /proc/x.safetensors: ") and ".part" not in str(info.value)


def test_an_output_path_under_a_file_names_the_file_in_the_way(tmp_path) -> None:
    """``segment -o afile/x``, ``demo --output afile/x.png``, ``quickstart --keep afile/x``: the
    message names the file that stands where a folder should be, not a folder that does not exist."""
    (tmp_path / "afile").write_text("")
    blocked = rf"cannot write .*x\.png: {tmp_path / 'afile'} is a file, not a folder"
    with pytest.raises(UsageError, match=blocked):
        check_writable(tmp_path / "afile" / "out" / "x.png", "--output")
