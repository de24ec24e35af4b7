"""benchmarks/gpu.py, the GPU table in one command, through its CPU test mode (``--device cpu --quick``):
the table beside the K40c figures, the parity check, training speed, the JSON and PNG, the time budget,
the CUDA-graph path (through eval.timing's capture hook) and the refusals; benchmarks/gpu.sh's routing."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import math
import os
import subprocess
import sys
import time

import pytest
import torch
from PIL import Image

from benchmarks import gpu
from eval import timing
from tests.conftest import REPO

QUICK_MODELS = ["voc-fcn8s", "fcn-googlenet"]


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    """One ``--device cpu --quick`` run of the command (FCN-8s, the unreleased FCN-GoogLeNet, training)."""
    out = tmp_path_factory.mktemp("gpu") / "results"
    stdout = io.StringIO()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with contextlib.redirect_stdout(stdout):
            code = gpu.main(
                ["--device", "cpu", "--quick", "--out", str(out), "--models", *QUICK_MODELS],
                started=time.monotonic(),
            )
    finally:
        torch.set_num_threads(threads)
    return code, stdout.getvalue(), out


def _rows(result: dict, model: str) -> dict[str, dict]:
    entry = next(e for e in result["models"] if e["model"] == model)
    return {row["config"]: row for row in entry["rows"]}


def test_quick_mode_prints_the_paper_rows_beside_the_k40c_figures_with_cuda_only_columns_marked_na(
    quick_run,
) -> None:
    code, stdout, _ = quick_run
    assert code == 0
    lines = stdout.splitlines()
    header = next(line for line in lines if line.startswith("| net (paper)"))
    assert [c.strip() for c in header.strip("|").split("|")] == [
        "net (paper)", "model", "K40c (paper)", "fp32 (TF32 off)", "TF32", "channels-last", "CUDA graphs",
        "bf16 autocast", "all four", "best vs K40c",
    ]  # fmt: skip
    fcn8s = next(line for line in lines if line.startswith("| FCN-8s, Table 3 | voc-fcn8s | 175 ms |"))
    cells = [c.strip() for c in fcn8s.strip("|").split("|")]
    assert cells[4] == cells[6] == cells[8] == "n/a on cpu"  # TF32, CUDA graphs, all four
    for cell in (cells[3], cells[5], cells[7]):  # fp32, channels-last, bf16: measured
        assert cell.endswith(" ms") and float(cell.split()[0]) > 0
    assert cells[9] == "- (quick)"  # tiny nets are not compared with the paper's 500x500 times
    googlenet = next(line for line in lines if line.startswith("| FCN-GoogLeNet, Table 1 |"))
    assert "59 ms" in googlenet and "not built" in googlenet
    assert "(--quick: tiny nets, not the paper's sizes)" in stdout


def test_the_speed_up_over_the_k40c_is_the_papers_time_over_the_fastest_configuration(quick_run) -> None:
    _, _, out = quick_run
    result = json.loads((out / "gpu.json").read_text()) | {"quick": False}
    rows = _rows(result, "voc-fcn8s")
    fastest = min(r["timing"]["median_ms"] for r in rows.values() if r["status"] == "ok")
    line = next(x for x in gpu.markdown(result).splitlines() if x.startswith("| FCN-8s, Table 3 |"))
    assert line.endswith(f" | {175 / fastest:.1f}x |")


def test_quick_mode_leaves_a_json_of_every_row_and_a_png_plot_of_the_times(quick_run) -> None:
    _, stdout, out = quick_run
    result = json.loads((out / "gpu.json").read_text())
    assert result["quick"] and result["device"] == "cpu" and result["settings"]["size"] == [64, 64]
    assert [e["model"] for e in result["models"]] == QUICK_MODELS
    rows = _rows(result, "voc-fcn8s")
    assert [c.key for c in gpu.CONFIGS] == list(rows)
    assert {k: r["status"] for k, r in rows.items()} == {
        "fp32": "ok", "tf32": "n/a on cpu", "channels_last": "ok", "cuda_graphs": "n/a on cpu", "bf16": "ok",
        "all": "n/a on cpu",
    }  # fmt: skip
    assert all(len(rows[k]["timing"]["times_ms"]) == 2 for k in ("fp32", "channels_last", "bf16"))
    assert result["models"][1]["paper"][0]["ms"] == 59 and "not built" in result["models"][1]["skipped"]
    assert (out / "gpu.md").read_text() == stdout
    image = Image.open(out / "gpu.png").convert("RGB")
    assert image.width == 900 and image.height > 200
    counts = {colour: n for n, colour in image.getcolors(maxcolors=image.width * image.height)}
    swatch = 11 * 11  # each colour's square in the legend; a bar adds more pixels of its colour
    for key in ("K40c", "fp32", "channels_last", "bf16"):
        assert counts.get(gpu._COLOURS[key], 0) > 2 * swatch, key
    for key in ("tf32", "cuda_graphs", "all"):  # n/a on the CPU: the legend's square only
        assert counts.get(gpu._COLOURS[key], 0) == swatch, key


def test_parity_against_the_cpu_is_exact_for_fp32_on_the_cpu_and_bounded_for_bf16(quick_run) -> None:
    _, stdout, out = quick_run
    rows = _rows(json.loads((out / "gpu.json").read_text()), "voc-fcn8s")
    fp32, bf16 = rows["fp32"]["parity"], rows["bf16"]["parity"]
    assert fp32["max_abs"] == 0 and fp32["argmax_agreement"] == 1.0  # the same net and input on the CPU
    assert 0 < bf16["max_rel"] < 0.1 and 0.9 < bf16["argmax_agreement"] < 1.0
    assert rows["bf16"]["agreement_vs_fp32"] == pytest.approx(bf16["argmax_agreement"])
    assert "| voc-fcn8s | bf16 autocast |" in stdout and "## Parity" in stdout


def test_parity_reports_the_largest_error_its_share_of_the_largest_score_and_argmax_agreement() -> None:
    reference = {"score": torch.tensor([[[[1.0, 0.0]], [[0.0, -4.0]]]])}  # 1 x 2 x 1 x 2: argmax 0, 0
    other = {"score": torch.tensor([[[[1.0, 0.0]], [[2.0, -4.5]]]])}  # argmax 1, 0
    result = gpu.parity(reference, other)
    assert result["max_abs"] == pytest.approx(2.0)
    assert result["max_rel"] == pytest.approx(0.5)  # 2 / max |reference| = 2 / 4
    assert result["argmax_agreement"] == pytest.approx(0.5)
    assert result["by_output"]["score"]["max_abs"] == pytest.approx(2.0)


def test_training_reports_iterations_per_second_of_fcn8s_with_the_official_solver(quick_run) -> None:
    _, stdout, out = quick_run
    training = json.loads((out / "gpu.json").read_text())["training"]
    assert training["model"] == "voc-fcn8s" and training["input"] == [64, 64]
    assert training["solver"]["base_lr"] == pytest.approx(1e-14) and training["solver"]["momentum"] == 0.99
    fp32, tf32 = training["rows"]
    assert fp32["status"] == "ok" and len(fp32["seconds"]) == 2 and len(fp32["losses"]) == 3
    assert fp32["it_per_s"] == pytest.approx(1 / fp32["s_per_it"]) and fp32["it_per_s"] > 0
    assert all(math.isfinite(v) and v > 0 for v in fp32["losses"])
    assert tf32["status"] == "n/a on cpu"
    assert f"| fp32 (TF32 off) | {fp32['it_per_s']:.2f} |" in stdout


def test_the_budget_skips_the_steps_that_would_end_past_it_and_keeps_time_for_training(
    tmp_path, monkeypatch
) -> None:
    """Each timed row costs 10 s of a fake clock: of 35 s, 10 kept for training, fp32 and
    channels-last take 20; bf16 would end past the forward rows' 25 s and is skipped, so is the next
    model (expected to take as long as the first, 20 s); training runs in the time kept for it; the
    report has its table, JSON and plot."""
    now = [0.0]
    real = timing.time_variant

    def slow_time_variant(*args, **kwargs):
        result = real(*args, **kwargs)
        now[0] += 10
        return result

    monkeypatch.setattr(timing, "time_variant", slow_time_variant)
    budget = gpu.Budget(35, start=0.0, reserve=10, clock=lambda: now[0])
    partials: list[dict] = []
    result = gpu.run(
        ["voc-fcn-alexnet", "voc-fcn8s"], torch.device("cpu"), gpu.QUICK, budget, quick=True,
        checkpoint=lambda partial: partials.append(json.loads(json.dumps(partial))),
    )  # fmt: skip
    statuses = {k: r["status"] for k, r in _rows(result, "voc-fcn-alexnet").items()}
    assert statuses["fp32"] == statuses["channels_last"] == "ok"
    assert statuses["bf16"] == gpu.SKIPPED_BUDGET and statuses["tf32"] == "n/a on cpu"
    assert result["models"][1]["skipped"] == gpu.SKIPPED_BUDGET
    assert len(partials) == 2 and [len(p["models"]) for p in partials] == [1, 2]
    assert "skipped" not in result["training"] and result["training"]["rows"][0]["status"] == "ok"
    assert result["notes"] == [
        "the 35 s budget ran out: skipped voc-fcn-alexnet bf16 autocast, voc-fcn8s"
    ]
    text = gpu.markdown(result)
    assert "skipped (budget)" in text and "note: the 35 s budget ran out" in text
    paths = gpu.write_outputs(result, tmp_path / "out")
    assert [p.name for p in paths] == ["gpu.json", "gpu.md", "gpu.png"] and all(p.is_file() for p in paths)
    assert result["complete"] and result["gpu"] is None


def test_a_partial_report_is_written_after_each_model_for_a_run_killed_from_outside(tmp_path) -> None:
    partials: list[dict] = []
    budget = gpu.Budget(300, start=time.monotonic())
    settings = dataclasses.replace(gpu.QUICK, train_iters=1, train_warmup=0)
    gpu.run(
        ["voc-fcn-alexnet", "fcn-googlenet"], torch.device("cpu"), settings, budget, quick=True,
        checkpoint=lambda partial: partials.append(json.loads(json.dumps(partial))),
    )  # fmt: skip
    assert [[e["model"] for e in p["models"]] for p in partials] == [
        ["voc-fcn-alexnet"], ["voc-fcn-alexnet", "fcn-googlenet"]
    ]
    first = partials[0]
    assert not first["complete"] and first["training"]["skipped"] == "not run yet"
    assert _rows(first, "voc-fcn-alexnet")["fp32"]["status"] == "ok"
    text = gpu.markdown(first)
    assert "so far (the run goes on: a partial report)" in text and "not run yet" in text
    gpu.write_outputs(first, tmp_path)
    assert json.loads((tmp_path / "gpu.json").read_text())["complete"] is False


def test_training_is_skipped_with_a_note_when_the_budget_is_spent() -> None:
    spent = gpu.Budget(10, start=0.0, clock=lambda: 10.0)
    training = gpu.bench_training(gpu.QUICK, torch.device("cpu"), spent)
    assert training["skipped"] == gpu.SKIPPED_BUDGET and training["rows"] == []
    result = gpu.run([], torch.device("cpu"), gpu.QUICK, spent, quick=True)
    assert result["notes"] == ["the 10 s budget ran out: skipped training"]


def test_the_training_reserve_keeps_time_for_training_when_forward_rows_run_out() -> None:
    now = [100.0]
    budget = gpu.Budget(480, start=0.0, clock=lambda: now[0])
    assert budget.reserve == 90 and budget.left() == 380 and budget.left(keep_reserve=True) == 290
    assert gpu.Budget(40, start=0.0, clock=lambda: 0.0).reserve == 10
    assert budget.fits(290, keep_reserve=True) and not budget.fits(291, keep_reserve=True)
    assert not gpu.Budget(10, start=0.0, clock=lambda: 10.0).fits(0)  # nothing starts at the end


def test_the_cuda_graph_row_runs_through_eval_timings_capture_hook(monkeypatch) -> None:
    """With eval.timing's CUDA calls replaced by a CPU stand-in (capture = one forward; replay reruns
    it into the captured outputs), the CUDA graphs column is timed and checked like the others."""
    replays = []

    def fake_capture(forward, device):
        static = forward()

        def replay() -> None:
            replays.append(1)
            for name, value in forward().items():
                static[name].copy_(value)

        return replay, static

    monkeypatch.setattr(timing, "cuda_graphs_supported", lambda device: True)
    monkeypatch.setattr(timing, "capture_cuda_graph", fake_capture)
    budget = gpu.Budget(300, start=time.monotonic())
    entry = gpu.bench_model("voc-fcn-alexnet", gpu.QUICK, torch.device("cpu"), budget)
    rows = {row["config"]: row for row in entry["rows"]}
    assert rows["cuda_graphs"]["status"] == "ok" and len(replays) == gpu.QUICK.runs
    assert rows["cuda_graphs"]["parity"]["max_abs"] == 0 and rows["cuda_graphs"]["agreement_vs_fp32"] == 1.0
    assert rows["all"]["status"] == "n/a on cpu"  # it needs TF32 as well


def test_without_cuda_it_says_so_in_one_line_and_exits_2(tmp_path) -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    out = tmp_path / "results"
    done = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "gpu.py"), "--out", str(out)],
        capture_output=True, text=True, cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 2 and done.stdout == ""
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: no CUDA device (torch ")
    assert "--device cpu --quick" in lines[0]
    assert not out.exists()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--device", "cpu"], "error: --device cpu runs only with --quick"),
        (["--device", "cpu", "--quick", "--models", "fcn9s"], "error: --models: unknown model 'fcn9s'"),
        (["--device", "cpu", "--quick", "--budget-s", "0"], "error: --budget-s must be positive"),
        (["--device", "cpu", "--quick", "--train-iters", "0"], "error: --train-iters must be at least 1"),
    ],
)
def test_bad_options_are_refused_in_one_line_before_anything_runs(argv, message, tmp_path, capsys) -> None:
    assert gpu.main([*argv, "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith(message)
    assert not (tmp_path / "o").exists()


def test_gpu_sh_runs_the_benchmark_under_a_python_whose_torch_sees_a_gpu(tmp_path) -> None:
    """A stand-in Python that answers the wrapper's CUDA probe with yes records how it is called
    next: with gpu.py and the arguments as given, from the caller's folder."""
    fake = tmp_path / "python"
    fake.write_text(f'#!/bin/sh\n[ "$1" = -c ] && exit 0\necho "$PWD" "$@" > {tmp_path}/called\n')
    fake.chmod(0o755)
    done = subprocess.run(
        [str(REPO / "benchmarks" / "gpu.sh"), "--out", "here", "--budget-s", "100"],
        env={**os.environ, "FCN_PORT_PYTHON": str(fake)}, cwd=tmp_path, capture_output=True, text=True,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    called = (tmp_path / "called").read_text().split()
    script = str(REPO / "benchmarks" / "gpu.py")
    assert called == [str(tmp_path), script, "--out", "here", "--budget-s", "100"]


def test_gpu_sh_passes_on_to_the_project_venv_when_that_python_sees_no_gpu(tmp_path) -> None:
    fake = tmp_path / "python"
    fake.write_text(f"#!/bin/sh\necho probed >> {tmp_path}/called\nexit 1\n")
    fake.chmod(0o755)
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    marker = venv / ".fcn-port-installed"  # the stamp scripts/venv.sh compares: up to date, no install
    want = subprocess.run(
        ["bash", "-c", '(cat pyproject.toml; ls -d -- */__init__.py) | sha256sum | cut -d" " -f1'],
        cwd=REPO, capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    marker.write_text(want + "\n")
    venv_python = venv / "bin" / "python"
    venv_python.write_text(f'#!/bin/sh\necho venv "$PWD" "$@" >> {tmp_path}/called\n')
    venv_python.chmod(0o755)
    done = subprocess.run(
        [str(REPO / "benchmarks" / "gpu.sh"), "--quick"],
        env={**os.environ, "FCN_PORT_PYTHON": str(fake), "FCN_PORT_VENV": str(venv)}, cwd=tmp_path,
        capture_output=True, text=True,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "called").read_text().splitlines() == [
        "probed", f"venv {tmp_path} {REPO / 'benchmarks' / 'gpu.py'} --quick"
    ]
