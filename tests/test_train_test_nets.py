"""Caffe's test nets: ``test_iter`` forward passes of each test net (TEST phase, its own data and
state, the train net's weights) every ``test_interval`` iterations and after the last, each output
value averaged, and the ``display`` lines (loss smoothed over ``average_loss``), checked against
what real Caffe's ``solver.solve()`` logged for the same solver (tests/fixtures/solvers/test_nets,
tools/make_solver_test_fixtures.py)."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from converters import load_solver
from converters.errors import SolverError
from converters.train import __main__ as cli
from tests.conftest import FIXTURES

CASE = FIXTURES / "solvers" / "test_nets"
SHAPES = {"data": (2, 3, 5, 6), "label": (2, 1, 5, 6)}
_OUTPUT = re.compile(r"Test net output #(\d+): (\S+) = (\S+)")


def _reports(text: str) -> list[dict]:
    reports: list[dict] = []
    for line in text.splitlines():
        if m := re.match(r"Iteration (\d+), Testing net \(#(\d+)\)", line):
            reports.append({"iter": int(m.group(1)), "net": int(m.group(2)), "outputs": []})
        elif m := re.match(r"Test loss: (\S+)", line):
            reports[-1]["loss"] = float(m.group(1))
        elif m := _OUTPUT.search(line):
            reports[-1]["outputs"].append((m.group(2), float(m.group(3))))
    return reports


def test_the_command_tests_each_net_when_caffe_does_and_reports_caffes_scores(tmp_path: Path, capsys) -> None:
    folder = shutil.copytree(CASE, tmp_path / "case")
    assert (
        cli.main(
            [str(folder / "solver.prototxt"), "--weights", str(folder / "init.caffemodel"), "--no-progress"]
        )
        == 0
    )
    ours = _reports(capsys.readouterr().out)
    caffe = json.loads((CASE / "expected.json").read_text())["tests"]
    assert [(r["iter"], r["net"]) for r in ours] == [(t["iter"], t["net"]) for t in caffe]
    for mine, theirs in zip(ours, caffe, strict=True):
        assert [name for name, _ in mine["outputs"]] == [o["name"] for o in theirs["outputs"]]
        for (name, value), expected in zip(mine["outputs"], theirs["outputs"], strict=True):
            # both printed with six significant digits
            assert value == pytest.approx(expected["value"], rel=2e-5, abs=2e-6), (mine["iter"], name)
        assert mine["loss"] == pytest.approx(theirs["loss"], rel=2e-5)


def test_the_command_prints_caffes_display_lines_with_its_smoothed_loss(tmp_path: Path, capsys) -> None:
    # display: 3, average_loss: 2 -- "Iteration N, loss = <smoothed>", the train outputs, the rate
    folder = shutil.copytree(CASE, tmp_path / "case")
    args = [str(folder / "solver.prototxt"), "--weights", str(folder / "init.caffemodel"), "--no-progress"]
    assert cli.main(args) == 0
    shown = []
    for line in capsys.readouterr().out.splitlines():
        if m := re.match(r"Iteration (\d+), loss = (\S+)$", line):
            shown.append({"iter": int(m.group(1)), "smoothed_loss": float(m.group(2)), "outputs": []})
        elif m := re.search(r"Train net output #\d+: (\S+) = (\S+)", line):
            shown[-1]["outputs"].append((m.group(1), float(m.group(2))))
        elif m := re.match(r"Iteration (\d+), lr = (\S+)$", line):
            shown[-1]["lr"] = float(m.group(2))
    caffe = json.loads((CASE / "expected.json").read_text())["display"]
    assert [d["iter"] for d in shown] == [d["iter"] for d in caffe] == [0, 3, 6]
    for mine, theirs in zip(shown, caffe, strict=True):
        assert mine["smoothed_loss"] == pytest.approx(theirs["smoothed_loss"], rel=2e-5)
        assert mine["lr"] == theirs["lr"]
        assert [n for n, _ in mine["outputs"]] == [o["name"] for o in theirs["outputs"]]
        for (_, value), expected in zip(mine["outputs"], theirs["outputs"], strict=True):
            assert value == pytest.approx(expected["value"], rel=2e-5)


def _solver(tmp_path: Path, **fields: object) -> Path:
    folder = shutil.copytree(CASE, tmp_path / "case")
    text = (folder / "solver.prototxt").read_text()
    for key, value in fields.items():
        text = re.sub(rf"^{key}[: ].*\n", "", text, flags=re.M)
        if value is not None:
            text += "".join(f"{key}: {v}\n" for v in (value if isinstance(value, list) else [value]))
    path = folder / "solver.prototxt"
    path.write_text(text)
    return path


def test_test_initialization_false_skips_iteration_0_only(tmp_path: Path) -> None:
    path = _solver(tmp_path, test_initialization="false")
    solver = load_solver(path, path.parent / "init.caffemodel", input_shapes=SHAPES)
    assert len(solver.test_nets) == 2 and not solver.test_due
    solver.iter = 4
    assert solver.test_due
    solver.iter = 5
    assert not solver.test_due


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"test_iter": [3]}, "2 test_state value(s) for 1 test net(s)"),  # one copy of the generic net
        ({"test_interval": None}, "the solver has test nets but no test_interval"),
        ({"net": None, "train_net": '"net.prototxt"', "test_net": '"net.prototxt"', "test_state": None},
         "2 test_iter value(s) for 1 test net(s)"),
        ({"test_state": None, "test_iter": [3, 2, 1]}, None),  # three copies of the generic net
    ],
)  # fmt: skip
def test_test_net_counts_are_checked_as_caffe_checks_them(
    tmp_path: Path, fields: dict, message: str | None
) -> None:
    path = _solver(tmp_path, **fields)
    if message is None:
        assert len(load_solver(path, input_shapes=SHAPES).test_nets) == 3
        return
    with pytest.raises(SolverError) as error:
        load_solver(path, input_shapes=SHAPES)
    assert message in str(error.value) and "\n" not in str(error.value)


def test_a_test_net_shares_the_train_nets_weights_as_they_train(tmp_path: Path) -> None:
    path = _solver(tmp_path)
    solver = load_solver(path, path.parent / "init.caffemodel", input_shapes=SHAPES)
    batch = {"data": np.ones((3, 3, 5, 6), np.float32), "label": np.zeros((3, 1, 5, 6), np.float32)}
    before = solver.test(batch, 0).means["loss"]
    solver.step({"data": np.ones((2, 3, 5, 6), np.float32), "label": np.zeros((2, 1, 5, 6), np.float32)})
    after = solver.test(batch, 0).means["loss"]
    assert after < before  # one step towards label 0 on the same input lowers the test loss
    assert solver.test_nets[0].stages == ["val"] and solver.test_nets[1].stages == ["small"]
    with pytest.raises(SolverError, match="test net #2: the solver has 2 test net"):
        solver.test(batch, 2)


def test_a_test_net_takes_the_feeds_it_reads_and_names_those_missing(tmp_path: Path) -> None:
    path = _solver(tmp_path)
    solver = load_solver(path, path.parent / "init.caffemodel", input_shapes=SHAPES)
    extra = {
        "data": np.ones((3, 3, 5, 6), np.float32),
        "label": np.zeros((3, 1, 5, 6), np.float32),
        "other": 1,
    }
    assert set(solver.test(extra, 0).means) == {"accuracy", "loss"}
    other = load_solver(path, path.parent / "init.caffemodel", input_shapes=SHAPES)
    with pytest.raises(SolverError, match=r"feeds lack 'label' \(the net reads data, label\)"):
        other.test({"data": np.ones((3, 3, 5, 6), np.float32)}, 0)
